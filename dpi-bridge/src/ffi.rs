//! The C ABI: DPI-C functions imported by `hdl/ep/cosim_pcie_ep.sv` (`cosim_ep_*`) and the
//! functions the Verilator C++ main calls (`cosim_sim_*`).
//!
//! Conventions: the handle is a `chandle` (`void *`), created by `cosim_ep_new`, started by
//! `cosim_ep_start`, released by `cosim_ep_free`; inputs before outputs; types exactly as
//! Verilator maps the SV types (`int unsigned` = `unsigned int`, `longint unsigned` =
//! `unsigned long long`, `byte unsigned` = `unsigned char`, `bit` = `svBit` = `uint8_t`).
//! Every function checks its pointers and catches panics: a bug logs an error and returns a
//! neutral value, it never aborts the simulator.
#![allow(clippy::missing_safety_doc)]
#![deny(unsafe_op_in_unsafe_fn)]

use std::ffi::{c_char, c_int, c_uchar, c_uint, c_ulonglong, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use cosim_protocol::MsixConfig;

use crate::registry::{self, CosimIdle, CosimSimStats, CosimWakeStats};
use crate::{Ep, EpBuilder};

enum State {
    Building(Box<EpBuilder>),
    Running(Box<Ep>),
    Failed,
}

struct Handle {
    state: State,
}

/// Runs `f` on the handle; `dflt` if the pointer is null or `f` panics.
fn with<R>(h: *mut c_void, what: &str, dflt: R, f: impl FnOnce(&mut State) -> R) -> R {
    if h.is_null() {
        tracing::error!(target: "cosim::dpi", what, "called with a null handle (was cosim_ep_new called?)");
        return dflt;
    }
    // SAFETY: non-null handles come only from `cosim_ep_new` (Box<Handle>::into_raw) and stay
    // valid until `cosim_ep_free`; the simulation calls them from its one thread.
    let handle = unsafe { &mut *(h as *mut Handle) };
    match catch_unwind(AssertUnwindSafe(|| f(&mut handle.state))) {
        Ok(r) => r,
        Err(_) => {
            tracing::error!(target: "cosim::dpi", what, "panic inside the DPI bridge (bug); returning a neutral value");
            dflt
        }
    }
}

/// Runs `f` on a started endpoint.
#[inline]
fn running<R>(h: *mut c_void, what: &str, dflt: R, f: impl FnOnce(&mut Ep) -> R) -> R {
    with(h, what, dflt, |s| match s {
        State::Running(ep) => f(ep),
        _ => panic!("{what} called before cosim_ep_start succeeded"),
    })
}

fn building(h: *mut c_void, what: &str, f: impl FnOnce(&mut EpBuilder) -> Result<(), String>) -> c_int {
    with(h, what, -1, |s| match s {
        State::Building(b) => match f(b) {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!(target: "cosim::dpi", what, error = %e, "bad endpoint parameter");
                -1
            }
        },
        _ => {
            tracing::error!(target: "cosim::dpi", what, "configuration after cosim_ep_start is ignored");
            -1
        }
    })
}

/// # Safety
/// `p` is null or a NUL-terminated string.
unsafe fn cstr(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the caller guarantees a NUL-terminated string (Verilator passes SV strings so).
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Creates an endpoint handle for instance `name` (for logs) on base endpoint `endpoint`.
/// Configure it with `cosim_ep_set_*`, then `cosim_ep_start`. Returns null on failure.
///
/// # Safety
/// `name` and `endpoint` are null or NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn cosim_ep_new(name: *const c_char, endpoint: *const c_char) -> *mut c_void {
    let new = || {
        crate::init_logging();
        // SAFETY: forwarded caller guarantee.
        let (name, endpoint) = unsafe { (cstr(name), cstr(endpoint)) };
        let b = EpBuilder::new(&name, &endpoint);
        Box::into_raw(Box::new(Handle { state: State::Building(Box::new(b)) })) as *mut c_void
    };
    catch_unwind(new).unwrap_or_else(|_| {
        tracing::error!(target: "cosim::dpi", "panic while creating an endpoint (bug)");
        std::ptr::null_mut()
    })
}

/// PCI identity. Returns 0, or -1 if a value is out of range.
#[no_mangle]
pub extern "C" fn cosim_ep_set_ids(
    h: *mut c_void,
    vendor_id: c_uint,
    device_id: c_uint,
    subsys_vendor_id: c_uint,
    subsys_id: c_uint,
    class_code: c_uint,
    revision: c_uint,
) -> c_int {
    building(h, "cosim_ep_set_ids", |b| {
        let u16_of = |v: c_uint, n: &str| u16::try_from(v).map_err(|_| format!("{n} {v:#x} does not fit 16 bits"));
        let rev = u8::try_from(revision).map_err(|_| format!("revision {revision:#x} does not fit 8 bits"))?;
        b.ids(
            u16_of(vendor_id, "vendor ID")?,
            u16_of(device_id, "device ID")?,
            u16_of(subsys_vendor_id, "subsystem vendor ID")?,
            u16_of(subsys_id, "subsystem ID")?,
            class_code,
            rev,
        );
        Ok(())
    })
}

/// BAR `bar`: `size` bytes (0 = absent), 64-bit and prefetchable flags, and the AXI base its
/// offsets are added to. Returns 0 or -1.
#[no_mangle]
pub extern "C" fn cosim_ep_set_bar(
    h: *mut c_void,
    bar: c_int,
    size: c_ulonglong,
    is64: u8,
    prefetch: u8,
    axi_base: c_ulonglong,
) -> c_int {
    building(h, "cosim_ep_set_bar", |b| {
        let i = usize::try_from(bar).map_err(|_| format!("BAR index {bar}"))?;
        b.bar(i, size, is64 != 0, prefetch != 0, axi_base).map_err(|e| e.to_string())?;
        Ok(())
    })
}

/// MSI-X layout (`vectors` 0 = none) and the most DMA reads outstanding at once. Returns 0 or -1.
#[no_mangle]
pub extern "C" fn cosim_ep_set_msix(
    h: *mut c_void,
    vectors: c_int,
    table_bar: c_int,
    table_offset: c_int,
    pba_bar: c_int,
    pba_offset: c_int,
) -> c_int {
    building(h, "cosim_ep_set_msix", |b| {
        let n = |v: c_int, what: &str| u32::try_from(v).map_err(|_| format!("negative MSI-X {what} {v}"));
        b.msix(MsixConfig {
            vectors: u16::try_from(vectors).map_err(|_| format!("MSI-X vectors {vectors}"))?,
            table_bar: u8::try_from(table_bar).map_err(|_| format!("MSI-X table BAR {table_bar}"))?,
            table_offset: n(table_offset, "table offset")?,
            pba_bar: u8::try_from(pba_bar).map_err(|_| format!("MSI-X PBA BAR {pba_bar}"))?,
            pba_offset: n(pba_offset, "PBA offset")?,
        });
        Ok(())
    })
}

/// Most DMA reads outstanding at once (AR accepted while fewer are in flight). Returns 0 or -1.
#[no_mangle]
pub extern "C" fn cosim_ep_set_max_reads(h: *mut c_void, n: c_int) -> c_int {
    building(h, "cosim_ep_set_max_reads", |b| {
        b.max_reads(usize::try_from(n).map_err(|_| format!("max reads {n}"))?);
        Ok(())
    })
}

/// Modelled DMA read latency in clocks (0 = free-running, see `EpConfig::dma_latency`).
/// Returns 0 or -1.
#[no_mangle]
pub extern "C" fn cosim_ep_set_dma_latency(h: *mut c_void, cycles: c_int) -> c_int {
    building(h, "cosim_ep_set_dma_latency", |b| {
        b.dma_latency(u64::try_from(cycles).map_err(|_| format!("DMA latency {cycles}"))?);
        Ok(())
    })
}

/// The design's clock in Hz, reported to the host in CONFIG (the shell's `CLOCK_HZ`, or
/// `+cosim_clock_hz`). Returns 0 or -1.
#[no_mangle]
pub extern "C" fn cosim_ep_set_clock_hz(h: *mut c_void, hz: c_ulonglong) -> c_int {
    building(h, "cosim_ep_set_clock_hz", |b| {
        b.clock_hz(hz);
        Ok(())
    })
}

/// Validates the configuration, binds the endpoint and starts its I/O thread. Returns 0, or
/// -1 after logging why (the SV shell then stops the simulation with `$fatal`).
#[no_mangle]
pub extern "C" fn cosim_ep_start(h: *mut c_void) -> c_int {
    with(h, "cosim_ep_start", -1, |s| {
        let State::Building(b) = s else {
            tracing::error!(target: "cosim::dpi", "cosim_ep_start called twice");
            return -1;
        };
        match b.start() {
            Ok(ep) => {
                *s = State::Running(Box::new(ep));
                0
            }
            Err(e) => {
                tracing::error!(target: "cosim::dpi", error = %e, "endpoint cannot start");
                *s = State::Failed;
                -1
            }
        }
    })
}

/// Says goodbye to the host, stops the I/O thread and frees the handle. Null is ignored.
///
/// # Safety
/// `h` is null or a handle from `cosim_ep_new` not freed before.
#[no_mangle]
pub unsafe extern "C" fn cosim_ep_free(h: *mut c_void) {
    if h.is_null() {
        return;
    }
    // SAFETY: caller guarantee: `h` came from Box::into_raw in cosim_ep_new and is freed once.
    let b = unsafe { Box::from_raw(h as *mut Handle) };
    if catch_unwind(AssertUnwindSafe(move || drop(b))).is_err() {
        tracing::error!(target: "cosim::dpi", "panic while closing an endpoint (bug)");
    }
}

/// Once per clock: returns the `PEND_*` mask (bit 0 MMIO queued, 1 R beat ready, 2 NIC frame,
/// 3 serial byte, 4 host reset, 5 DMA read slots full). Bits 0..3 each allow one call of their
/// pop (`cosim_ep_mmio_pop` or `_mmio_reject_queued`, `_dma_r`, `_nic_rx`, `_uart_rx`) until the
/// next tick; a pop without its bit is refused (returns 0, takes nothing, logged as a shell bug).
#[no_mangle]
pub extern "C" fn cosim_ep_tick(h: *mut c_void) -> c_uint {
    running(h, "cosim_ep_tick", 0, |ep| ep.core.tick())
}

/// Takes the next MMIO access. Returns 1 and fills the outputs, or 0 if none is queued or this
/// clock's tick did not report `PEND_MMIO` (refused: nothing taken).
///
/// # Safety
/// Output pointers are valid for writes (Verilator passes locals).
#[no_mangle]
pub unsafe extern "C" fn cosim_ep_mmio_pop(
    h: *mut c_void,
    write: *mut u8,
    addr: *mut c_ulonglong,
    size_log2: *mut c_uchar,
    bar: *mut c_uchar,
    wdata: *mut c_ulonglong,
    wstrb: *mut c_uchar,
) -> u8 {
    if write.is_null() || addr.is_null() || size_log2.is_null() || bar.is_null() || wdata.is_null() || wstrb.is_null() {
        return 0;
    }
    running(h, "cosim_ep_mmio_pop", 0, |ep| match ep.core.mmio_pop() {
        Some(b) => {
            // SAFETY: pointers checked non-null above; caller guarantees they are writable.
            unsafe {
                *write = u8::from(b.write);
                *addr = b.addr;
                *size_log2 = b.size_log2;
                *bar = b.bar;
                *wdata = b.wdata;
                *wstrb = b.wstrb;
            }
            1
        }
        None => 0,
    })
}

/// The AXI read of the current MMIO read finished with `rresp` and raw bus data `rdata`.
#[no_mangle]
pub extern "C" fn cosim_ep_mmio_read_done(h: *mut c_void, rresp: c_uchar, rdata: c_ulonglong) {
    running(h, "cosim_ep_mmio_read_done", (), |ep| ep.core.mmio_read_done(rresp, rdata))
}

/// The AXI write of the current MMIO write finished with `bresp`.
#[no_mangle]
pub extern "C" fn cosim_ep_mmio_write_done(h: *mut c_void, bresp: c_uchar) {
    running(h, "cosim_ep_mmio_write_done", (), |ep| ep.core.mmio_write_done(bresp))
}

/// The current MMIO access got no answer within `cycles` clocks.
#[no_mangle]
pub extern "C" fn cosim_ep_mmio_timeout(h: *mut c_void, write: u8, cycles: c_uint) {
    running(h, "cosim_ep_mmio_timeout", (), |ep| ep.core.mmio_timeout(write != 0, cycles))
}

/// Fails every queued MMIO access (the AXI master is stuck on a timed-out one). Refused (nothing
/// failed) unless this clock's tick reported `PEND_MMIO`.
#[no_mangle]
pub extern "C" fn cosim_ep_mmio_reject_queued(h: *mut c_void) {
    running(h, "cosim_ep_mmio_reject_queued", (), |ep| ep.core.mmio_reject_queued())
}

/// DMA read address handshake (AR channel). Returns 1 if no further read can be accepted now.
#[no_mangle]
pub extern "C" fn cosim_ep_dma_ar(
    h: *mut c_void,
    id: c_uint,
    addr: c_ulonglong,
    len: c_uchar,
    size: c_uchar,
    burst: c_uchar,
) -> u8 {
    running(h, "cosim_ep_dma_ar", 1, |ep| u8::from(ep.core.dma_ar(id, addr, len, size, burst)))
}

/// Next R beat. Returns 1 and fills the outputs, or 0 if the oldest read has no data yet or this
/// clock's tick did not report `PEND_RBEAT` (refused: the beat stays for a later clock).
///
/// # Safety
/// Output pointers are valid for writes.
#[no_mangle]
pub unsafe extern "C" fn cosim_ep_dma_r(
    h: *mut c_void,
    id: *mut c_uint,
    data: *mut c_ulonglong,
    resp: *mut c_uchar,
    last: *mut u8,
) -> u8 {
    if id.is_null() || data.is_null() || resp.is_null() || last.is_null() {
        return 0;
    }
    running(h, "cosim_ep_dma_r", 0, |ep| match ep.core.dma_r() {
        Some(b) => {
            // SAFETY: pointers checked non-null above; caller guarantees they are writable.
            unsafe {
                *id = b.id;
                *data = b.data;
                *resp = b.resp;
                *last = u8::from(b.last);
            }
            1
        }
        None => 0,
    })
}

/// DMA write address handshake (AW channel).
#[no_mangle]
pub extern "C" fn cosim_ep_dma_aw(h: *mut c_void, id: c_uint, addr: c_ulonglong, len: c_uchar, size: c_uchar, burst: c_uchar) {
    running(h, "cosim_ep_dma_aw", (), |ep| ep.core.dma_aw(id, addr, len, size, burst))
}

/// One W beat. Returns 1 with the B response in `bid`/`bresp` when the burst is complete.
///
/// # Safety
/// Output pointers are valid for writes.
#[no_mangle]
pub unsafe extern "C" fn cosim_ep_dma_w(
    h: *mut c_void,
    data: c_ulonglong,
    strb: c_uchar,
    last: u8,
    bid: *mut c_uint,
    bresp: *mut c_uchar,
) -> u8 {
    if bid.is_null() || bresp.is_null() {
        return 0;
    }
    running(h, "cosim_ep_dma_w", 0, |ep| match ep.core.dma_w(data, strb, last != 0) {
        Some((id, resp)) => {
            // SAFETY: pointers checked non-null above; caller guarantees they are writable.
            unsafe {
                *bid = id;
                *bresp = resp;
            }
            1
        }
        None => 0,
    })
}

/// MSI-X request for vector `vec`.
#[no_mangle]
pub extern "C" fn cosim_ep_msix(h: *mut c_void, vec: c_uint) {
    running(h, "cosim_ep_msix", (), |ep| ep.core.msix(vec))
}

/// One beat of the NIC transmit stream (user -> network).
#[no_mangle]
pub extern "C" fn cosim_ep_nic_tx(h: *mut c_void, data: c_ulonglong, keep: c_uchar, last: u8) {
    running(h, "cosim_ep_nic_tx", (), |ep| ep.core.nic_tx(data, keep, last != 0))
}

/// Next beat of the NIC receive stream. Returns 1 and fills the outputs, or 0 (nothing queued, or
/// this clock's tick did not report `PEND_NIC_RX`: refused, nothing taken).
///
/// # Safety
/// Output pointers are valid for writes.
#[no_mangle]
pub unsafe extern "C" fn cosim_ep_nic_rx(h: *mut c_void, data: *mut c_ulonglong, keep: *mut c_uchar, last: *mut u8) -> u8 {
    if data.is_null() || keep.is_null() || last.is_null() {
        return 0;
    }
    running(h, "cosim_ep_nic_rx", 0, |ep| match ep.core.nic_rx() {
        Some((d, k, l)) => {
            // SAFETY: pointers checked non-null above; caller guarantees they are writable.
            unsafe {
                *data = d;
                *keep = k;
                *last = u8::from(l);
            }
            1
        }
        None => 0,
    })
}

/// One byte from the RTL's UART transmitter.
#[no_mangle]
pub extern "C" fn cosim_ep_uart_tx(h: *mut c_void, byte: c_uchar) {
    running(h, "cosim_ep_uart_tx", (), |ep| ep.core.uart_tx(byte))
}

/// Next byte for the RTL's UART receiver. Returns 1 and fills `byte`, or 0 (nothing queued, or
/// this clock's tick did not report `PEND_UART_RX`: refused, nothing taken).
///
/// # Safety
/// `byte` is valid for writes.
#[no_mangle]
pub unsafe extern "C" fn cosim_ep_uart_rx(h: *mut c_void, byte: *mut c_uchar) -> u8 {
    if byte.is_null() {
        return 0;
    }
    running(h, "cosim_ep_uart_rx", 0, |ep| match ep.core.uart_rx() {
        Some(b) => {
            // SAFETY: checked non-null; caller guarantees it is writable.
            unsafe { *byte = b };
            1
        }
        None => 0,
    })
}

/// For the C++ main: true once a host said goodbye (the simulation should end).
#[no_mangle]
pub extern "C" fn cosim_sim_stop_requested() -> bool {
    catch_unwind(registry::stop_requested).unwrap_or(false)
}

/// For the C++ main: writes the started endpoints, comma-separated and NUL-terminated, into
/// `buf` (truncated to `len`); returns the full length without the NUL.
///
/// # Safety
/// `buf` is null or valid for `len` bytes of writes.
#[no_mangle]
pub unsafe extern "C" fn cosim_sim_endpoints(buf: *mut c_char, len: usize) -> usize {
    let s = catch_unwind(registry::endpoints).unwrap_or_default();
    if !buf.is_null() && len > 0 {
        let n = s.len().min(len - 1);
        // SAFETY: caller guarantees `buf` holds `len` bytes; we write `n + 1 <= len`.
        unsafe {
            std::ptr::copy_nonoverlapping(s.as_ptr(), buf as *mut u8, n);
            *buf.add(n) = 0;
        }
    }
    s.len()
}

/// For the `cosim_busy` module (hdl/ep/cosim_busy.sv), once in its `initial` block: the design
/// declares when it is busy; it counts as busy until it reports otherwise.
#[no_mangle]
pub extern "C" fn cosim_busy_declare() {
    let _ = catch_unwind(registry::busy_declare);
}

/// For the `cosim_busy` module: its `busy` input changed to `busy` (called on changes only).
#[no_mangle]
pub extern "C" fn cosim_busy_set(busy: u8) {
    let _ = catch_unwind(|| registry::busy_set(busy != 0));
}

/// For the C++ main: what its idle sleep decides on (see `CosimIdle`).
#[no_mangle]
pub extern "C" fn cosim_sim_idle() -> CosimIdle {
    catch_unwind(registry::idle).unwrap_or_default()
}

/// For the C++ main, between clocks: sleeps until any endpoint receives a message, a signal
/// arrives or `timeout_ms` passes. Returns 1 if a message ended it (or one was pending), else 0.
#[no_mangle]
pub extern "C" fn cosim_sim_sleep(timeout_ms: c_int) -> c_int {
    catch_unwind(|| c_int::from(registry::sleep(timeout_ms))).unwrap_or(0)
}

/// For the C++ main: how long the idle sleep's wakes took (see `CosimWakeStats`).
#[no_mangle]
pub extern "C" fn cosim_sim_wake_stats() -> CosimWakeStats {
    catch_unwind(registry::wake_stats).unwrap_or_default()
}

/// For the C++ main: statistics summed over every endpoint.
#[no_mangle]
pub extern "C" fn cosim_sim_stats() -> CosimSimStats {
    catch_unwind(registry::stats).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    /// The helpers that catch panics for the exported functions of this file. A helper counts
    /// only while it calls `catch_unwind` or a helper listed before it.
    const GUARDS: [&str; 3] = ["with", "running", "building"];

    fn body<'a>(src: &'a str, name: &str) -> &'a str {
        let start = src.find(&format!("fn {name}(")).or_else(|| src.find(&format!("fn {name}<")));
        let start = start.unwrap_or_else(|| panic!("fn {name} not found"));
        let open = start + src[start..].find(" {\n").expect("body");
        &src[open..open + src[open..].find("\n}\n").expect("end of body")]
    }

    /// `body` calls `f` (not merely a function whose name ends with `f`).
    fn calls(body: &str, f: &str) -> bool {
        body.match_indices(&format!("{f}(")).any(|(i, _)| {
            !body[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '.')
        })
    }

    /// Every exported function catches panics (directly or through a guard): a new export
    /// without one fails here. A panic must never unwind into the simulator.
    #[test]
    fn every_export_catches_panics() {
        let src = include_str!("ffi.rs");
        let src = &src[..src.find("\n#[cfg(test)]\nmod tests").expect("test module")];
        let catches = |b: &str, guards: &[&str]| calls(b, "catch_unwind") || guards.iter().any(|g| calls(b, g));
        for (i, g) in GUARDS.iter().enumerate() {
            assert!(catches(body(src, g), &GUARDS[..i]), "guard {g} does not catch panics");
        }
        let name_after = |s: &str| s[s.find("fn ").expect("fn") + 3..].split(['(', '<']).next().unwrap().to_string();
        let exports: Vec<String> = src.split("#[no_mangle]\n").skip(1).map(name_after).collect();
        let pub_extern: Vec<String> =
            src.lines().filter(|l| l.starts_with("pub ") && l.contains("extern \"C\" fn ")).map(name_after).collect();
        assert_eq!(exports, pub_extern, "every `pub extern \"C\" fn` is #[no_mangle] and vice versa");
        assert!(exports.len() >= 20, "found only {exports:?}");
        for name in &exports {
            assert!(
                catches(body(src, name), &GUARDS),
                "exported {name} does not catch panics (use catch_unwind or one of {GUARDS:?})"
            );
        }
        eprintln!("{} exports, each catches panics: {}", exports.len(), exports.join(", "));
    }
}
