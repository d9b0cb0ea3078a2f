//! QEMU's command line and the guest kernel's, built by pure functions from a typed description
//! (no I/O; unit-tested argument by argument). docs/guest.md, "The launcher", step 2, shows the
//! result; `qemu-cmdline.txt` in the log directory records it ([`shell_line`]).
//!
//! Fixed parts: q35, TCG, no graphics, no reboot (the guest powers off when done), qboot as the
//! firmware, no VGA. Per accelerator `N`: `-chardev file,id=accuartN,path=<uart log>` for its
//! UART and `-device accelerator-pcie,id=accelN,addr=<slot>,endpoint=<endpoint>,chardev=accuartN`
//! (slot [`ACCEL_FIRST_SLOT`] + N, so the guest finds every accelerator function whatever its PCI
//! IDs: [`accel_param`]), plus `netdev=accnet0` for accelerator 0 when its NIC channel has a
//! netdev, plus the device options. With the virtual IOMMU ([`QemuSpec::iommu`]):
//! `-device intel-iommu,intremap=on` before every other device.
//! Serve mode ([`ServeChannel`]): a virtio-net NIC on QEMU user networking, restricted (the guest
//! reaches nothing), with one host forward from 127.0.0.1 to `accel-tool serve` in the guest (the
//! default), or a virtio-serial port on a Unix socket.
//!
//! vfio-user mode ([`Accelerator::VfioUser`], any QEMU 10.1 or later, no cosim code in it): per
//! accelerator `N`, `-device {"driver":"vfio-user-pci","id":"accelN","addr":<slot>,"socket":
//! {"path":<socket>,"type":"unix"}}` (JSON: the socket is a structured property) at the same slot
//! as the patched device, and the guest RAM as a shared memfd backend ([`SHARED_RAM_ID`]), which
//! the simulation's vfio-user server maps for DMA.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::Error;

/// Where QEMU looks for firmware (`-L`): Debian's SeaBIOS, QEMU and iPXE directories.
pub const FIRMWARE_DIRS: [&str; 3] = ["/usr/share/seabios", "/usr/share/qemu", "/usr/lib/ipxe/qemu"];

/// Longest kernel command line: x86 COMMAND_LINE_SIZE is 2048 bytes including the NUL.
pub const APPEND_MAX: usize = 2047;

/// PCI slot of accelerator 0 on the root bus (accelerator N: this + N), above the slots QEMU
/// gives devices without `addr=` (from 1 up) and below q35's own (0x1f).
pub const ACCEL_FIRST_SLOT: u8 = 0x10;
/// Most accelerators the slots from [`ACCEL_FIRST_SLOT`] to 0x1e hold.
pub const ACCEL_MAX: usize = 15;

/// The PCI address of accelerator `i` in the guest, e.g. `0000:00:10.0`.
pub fn accel_bdf(i: usize) -> String {
    format!("0000:00:{:02x}.0", ACCEL_FIRST_SLOT as usize + i)
}

/// The kernel command line's `cosim.accel=` (the guest's /init counts these functions in its
/// COSIM-BOOT line) and, with the IOMMU, `intel_iommu=on cosim.vfio=all` (/init binds the
/// accelerator functions no driver claimed to vfio-pci).
pub fn accel_param(count: usize, iommu: bool) -> String {
    let mut p = String::new();
    if count > 0 {
        p = format!("cosim.accel={}", (0..count).map(accel_bdf).collect::<Vec<_>>().join(","));
    }
    if iommu {
        p = format!("{p} intel_iommu=on cosim.vfio=all").trim_start().to_string();
    }
    p
}

/// The workload when no `--run` item is given.
pub const DEFAULT_RUN: &str = "gemm --m 64 --n 64 --k 64 --seed 1 --check";

/// Serve mode's channel: the virtio-serial port's name, the guest's NIC (MAC, address) and the
/// server's TCP port, defined here once; the guest's /init and `accel-tool serve` get them on the
/// kernel command line ([`serve_append`]).
pub mod serve {
    /// Name of the virtio-serial port (`virtserialport,name=`), which the server looks up.
    pub const PORT_NAME: &str = "cosim.serve";
    /// MAC address of the serve NIC (/init finds the interface by it).
    pub const MAC: &str = "52:54:00:c5:00:01";
    /// The guest's address on QEMU user networking (its default DHCP address).
    pub const GUEST_IP: &str = "10.0.2.15";
    /// Prefix length of the user network (10.0.2.0/24).
    pub const PREFIX: u8 = 24;
    /// TCP port `accel-tool serve` listens on in the guest.
    pub const GUEST_PORT: u16 = 7000;
}

/// Serve mode's channel between the host's client and `accel-tool serve` (docs/guest.md, "Serve
/// mode", says why TCP is the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServeChannel {
    /// `-device virtio-serial-pci`, a `socket` chardev listening on `socket` (a Unix socket) and
    /// a `virtserialport` named [`serve::PORT_NAME`] on it.
    Serial { socket: PathBuf },
    /// `-netdev user,restrict=on,hostfwd=tcp:127.0.0.1:<host_port>-<guest>:<port>` and a
    /// virtio-net NIC on it.
    Tcp { host_port: u16 },
}

impl ServeChannel {
    fn args(&self) -> Vec<String> {
        match self {
            ServeChannel::Serial { socket } => vec![
                "-device".into(),
                "virtio-serial-pci,id=serveser0".into(),
                "-chardev".into(),
                format!("socket,id=serve0,path={},server=on,wait=off", socket.display()),
                "-device".into(),
                format!("virtserialport,bus=serveser0.0,chardev=serve0,name={}", serve::PORT_NAME),
            ],
            ServeChannel::Tcp { host_port } => vec![
                "-netdev".into(),
                format!(
                    "user,id=servenet0,restrict=on,hostfwd=tcp:127.0.0.1:{host_port}-{}:{}",
                    serve::GUEST_IP,
                    serve::GUEST_PORT
                ),
                "-device".into(),
                format!("virtio-net-pci,netdev=servenet0,mac={}", serve::MAC),
            ],
        }
    }
}

/// The kernel command line's serve-mode part: `accel-tool serve`'s arguments (its channel and the
/// simulation's modelled read latency, for the models) and, over TCP, the NIC's MAC and address.
pub fn serve_append(channel: &ServeChannel, read_latency: u32) -> String {
    match channel {
        ServeChannel::Serial { .. } => {
            format!("cosim.serve=\"--serial {} --read-latency {read_latency}\"", serve::PORT_NAME)
        }
        ServeChannel::Tcp { .. } => format!(
            "cosim.serve=\"--port {} --read-latency {read_latency}\" cosim.serve_mac={} cosim.serve_ip={}/{}",
            serve::GUEST_PORT,
            serve::MAC,
            serve::GUEST_IP,
            serve::PREFIX
        ),
    }
}

/// QEMU's device for a simulation that is a vfio-user server (QEMU 10.1 or later).
pub const VFIO_USER_DEVICE: &str = "vfio-user-pci";

/// Id of the guest RAM's shared memfd backend in vfio-user mode.
pub const SHARED_RAM_ID: &str = "cosim-ram";

/// True if QEMU's `-device help` output lists `driver` (lines `name "DRIVER", bus ..., desc ...`).
pub fn device_help_lists(help: &str, driver: &str) -> bool {
    let want = format!("name \"{driver}\"");
    help.lines().any(|l| l.trim_start().starts_with(&want))
}

/// One accelerator: the QEMU device that stands for one simulation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accelerator {
    /// `accelerator-pcie` (cosim's patched QEMU) on the cosim link.
    Patched {
        /// The simulation's endpoint (docs/protocol.md, "Channels").
        endpoint: String,
        /// File that receives what the RTL's UART sends (a `file` chardev).
        uart_log: PathBuf,
    },
    /// [`VFIO_USER_DEVICE`] (any QEMU 10.1 or later): the simulation serves vfio-user on this Unix
    /// socket. The guest RAM must then be shared ([`QemuSpec::args`] sees to it).
    VfioUser {
        /// The simulation's socket (its endpoint is `vfio-user://` + this path).
        socket: PathBuf,
    },
}

/// A `--device-opt KEY=VALUE` as a member of a JSON `-device`: VALUE is taken as JSON if it is a
/// number, `true`, `false` or `null`, else as a string (`x-msg-timeout=10000` is a number,
/// `x-foo=on` a string).
fn json_member(opt: &str) -> String {
    let (k, v) = opt.split_once('=').unwrap_or((opt, ""));
    let value = match serde_json::from_str::<serde_json::Value>(v) {
        Ok(j) if !j.is_object() && !j.is_array() && !j.is_string() => j,
        _ => serde_json::Value::from(v),
    };
    format!("{}:{value}", serde_json::Value::from(k))
}

impl Accelerator {
    /// The device's `-chardev` (patched: the UART) and `-device` arguments as accelerator `i`.
    fn args(&self, i: usize, netdev: bool, device_opts: &[String]) -> Vec<String> {
        let slot = ACCEL_FIRST_SLOT as usize + i;
        match self {
            Accelerator::Patched { endpoint, uart_log } => {
                let mut dev =
                    format!("accelerator-pcie,id=accel{i},addr=0x{slot:02x}.0,endpoint={endpoint},chardev=accuart{i}");
                if netdev {
                    dev.push_str(",netdev=accnet0");
                }
                for o in device_opts {
                    dev.push(',');
                    dev.push_str(o);
                }
                let chardev = format!("file,id=accuart{i},path={}", uart_log.display());
                vec!["-chardev".into(), chardev, "-device".into(), dev]
            }
            Accelerator::VfioUser { socket } => {
                let path = serde_json::Value::from(socket.display().to_string());
                let mut dev = format!(
                    "{{\"driver\":\"{VFIO_USER_DEVICE}\",\"id\":\"accel{i}\",\"addr\":\"0x{slot:02x}.0\",\
                     \"socket\":{{\"path\":{path},\"type\":\"unix\"}}"
                );
                for o in device_opts {
                    dev.push(',');
                    dev.push_str(&json_member(o));
                }
                dev.push('}');
                vec!["-device".into(), dev]
            }
        }
    }
}

/// Everything QEMU's command line is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuSpec {
    /// Guest memory in MiB (`-m`).
    pub memory_mib: u32,
    /// Guest CPUs (`-smp`).
    pub smp: u32,
    /// Firmware search path (`-L`, in order).
    pub firmware_dirs: Vec<PathBuf>,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Kernel command line ([`kernel_append`]).
    pub append: String,
    /// Netdev for accelerator 0's NIC channel: `-netdev <spec>,id=accnet0`.
    pub accel_netdev: Option<String>,
    /// Netdev for an e1000 in the guest: `-netdev <spec>,id=guestnet0 -device e1000,...`.
    pub nic: Option<String>,
    /// Serve mode's channel.
    pub serve: Option<ServeChannel>,
    /// One device per simulation, in order (`accel0`, `accel1`, ...).
    pub accelerators: Vec<Accelerator>,
    /// Extra `KEY=VALUE` options for every accelerator's `-device` (vfio-user: JSON members,
    /// VALUE a JSON scalar or else a string).
    pub device_opts: Vec<String>,
    /// QEMU's virtual IOMMU (`-device intel-iommu,intremap=on`): the guest can use VFIO.
    pub iommu: bool,
    /// Extra arguments, last.
    pub extra_args: Vec<String>,
}

impl QemuSpec {
    /// True if a vfio-user server maps the guest RAM, which must then be a shared memfd.
    pub fn shared_ram(&self) -> bool {
        self.accelerators.iter().any(|a| matches!(a, Accelerator::VfioUser { .. }))
    }

    /// The arguments after the program name.
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |s: &str| a.push(s.into());
        let m = self.memory_mib.to_string();
        if self.shared_ram() {
            let machine = format!("q35,memory-backend={SHARED_RAM_ID}");
            let ram = format!("memory-backend-memfd,id={SHARED_RAM_ID},size={m}M,share=on");
            for s in ["-M", &machine, "-object", &ram] {
                push(s);
            }
        } else {
            push("-M");
            push("q35");
        }
        for s in ["-accel", "tcg", "-m", &m, "-smp", &self.smp.to_string()] {
            push(s);
        }
        for s in ["-nographic", "-no-reboot", "-bios", "qboot.rom", "-vga", "none"] {
            push(s);
        }
        for d in &self.firmware_dirs {
            a.push("-L".into());
            a.push(d.into());
        }
        a.extend(["-kernel".into(), self.kernel.clone().into(), "-initrd".into(), self.initrd.clone().into()]);
        a.extend(["-append".into(), self.append.clone().into()]);
        if self.iommu {
            // Interrupt remapping: vfio_iommu_type1 refuses MSI without it.
            a.extend(["-device".into(), "intel-iommu,intremap=on".into()]);
        }
        if let Some(nd) = &self.accel_netdev {
            a.extend(["-netdev".into(), format!("{nd},id=accnet0").into()]);
        }
        if let Some(nd) = &self.nic {
            a.extend(["-netdev".into(), format!("{nd},id=guestnet0").into()]);
            a.extend(["-device".into(), "e1000,netdev=guestnet0".into()]);
        }
        if let Some(sv) = &self.serve {
            a.extend(sv.args().into_iter().map(OsString::from));
        }
        for (i, acc) in self.accelerators.iter().enumerate() {
            let netdev = i == 0 && self.accel_netdev.is_some();
            a.extend(acc.args(i, netdev, &self.device_opts).into_iter().map(OsString::from));
        }
        a.extend(self.extra_args.iter().map(OsString::from));
        a
    }
}

/// The guest's workload for `cosim.run=`: the `--run` items (default [`DEFAULT_RUN`]) joined by
/// `;`. An item with `"` or `;` cannot be carried.
pub fn workload(items: &[String]) -> Result<String, Error> {
    let items: Vec<&str> =
        if items.is_empty() { vec![DEFAULT_RUN] } else { items.iter().map(|s| s.as_str()).collect() };
    if let Some(bad) = items.iter().find(|it| it.contains('"') || it.contains(';')) {
        return Err(Error::RunItem { item: bad.to_string() });
    }
    Ok(items.join(";"))
}

/// The kernel command line: serial console, panic reboots (which `-no-reboot` turns into an
/// exit), the workload, `cosim.net=1` when the guest has a NIC, then `extra`. At most
/// [`APPEND_MAX`] bytes.
pub fn kernel_append(workload: &str, nic: bool, extra: &str) -> Result<String, Error> {
    let mut append = format!("console=ttyS0 panic=-1 cosim.run=\"{workload}\"");
    if nic {
        append.push_str(" cosim.net=1");
    }
    if !extra.is_empty() {
        append.push(' ');
        append.push_str(extra);
    }
    if append.len() > APPEND_MAX {
        return Err(Error::AppendTooLong { len: append.len() });
    }
    Ok(append)
}

/// The command as one line for `qemu-cmdline.txt`: arguments with a space or `"` in `'...'`.
pub fn shell_line(program: &Path, args: &[OsString]) -> String {
    std::iter::once(program.display().to_string())
        .chain(args.iter().map(|a| {
            let s = a.to_string_lossy().to_string();
            if s.contains(' ') || s.contains('"') {
                format!("'{s}'")
            } else {
                s
            }
        }))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> QemuSpec {
        QemuSpec {
            memory_mib: 512,
            smp: 1,
            firmware_dirs: FIRMWARE_DIRS.iter().map(PathBuf::from).collect(),
            kernel: "/b/guest/bzImage".into(),
            initrd: "/b/guest/initramfs.cpio.gz".into(),
            append: kernel_append(&workload(&[]).unwrap(), false, "").unwrap(),
            accel_netdev: None,
            nic: None,
            serve: None,
            accelerators: vec![Accelerator::Patched {
                endpoint: "ipc:///run/x/accel0".into(),
                uart_log: "/l/accel0-uart.log".into(),
            }],
            device_opts: Vec::new(),
            iommu: false,
            extra_args: Vec::new(),
        }
    }

    fn argv(s: &QemuSpec) -> Vec<String> {
        s.args().into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    /// Up to `-append` with 512 MiB, 1 CPU and the default firmware dirs.
    const DEFAULTS: [&str; 25] = [
        "-M",
        "q35",
        "-accel",
        "tcg",
        "-m",
        "512",
        "-smp",
        "1",
        "-nographic",
        "-no-reboot",
        "-bios",
        "qboot.rom",
        "-vga",
        "none",
        "-L",
        "/usr/share/seabios",
        "-L",
        "/usr/share/qemu",
        "-L",
        "/usr/lib/ipxe/qemu",
        "-kernel",
        "/b/guest/bzImage",
        "-initrd",
        "/b/guest/initramfs.cpio.gz",
        "-append",
    ];

    #[test]
    fn one_accelerator_with_the_defaults() {
        let mut want = DEFAULTS.to_vec();
        want.extend([
            "console=ttyS0 panic=-1 cosim.run=\"gemm --m 64 --n 64 --k 64 --seed 1 --check\"",
            "-chardev",
            "file,id=accuart0,path=/l/accel0-uart.log",
            "-device",
            "accelerator-pcie,id=accel0,addr=0x10.0,endpoint=ipc:///run/x/accel0,chardev=accuart0",
        ]);
        assert_eq!(argv(&spec()), want);
    }

    #[test]
    fn baseline_vm_without_accelerator_with_an_e1000() {
        let mut s = spec();
        s.accelerators.clear();
        s.nic = Some("stream,server=off,addr.type=inet,addr.host=127.0.0.1,addr.port=5555,reconnect-ms=200".into());
        s.append = kernel_append("net --count 3", true, "").unwrap();
        let mut want = DEFAULTS.to_vec();
        want.extend([
            "console=ttyS0 panic=-1 cosim.run=\"net --count 3\" cosim.net=1",
            "-netdev",
            "stream,server=off,addr.type=inet,addr.host=127.0.0.1,addr.port=5555,reconnect-ms=200,id=guestnet0",
            "-device",
            "e1000,netdev=guestnet0",
        ]);
        assert_eq!(argv(&s), want);
    }

    #[test]
    fn two_accelerators_with_nic_channel_options_and_extra_args() {
        let mut s = spec();
        s.memory_mib = 1024;
        s.smp = 2;
        s.firmware_dirs = vec!["/fw".into()];
        s.append = kernel_append("info;gemm --m 4 --n 4 --k 4", true, "cosim.klog=0").unwrap();
        s.accel_netdev = Some("stream,server=on,addr.type=inet,addr.host=127.0.0.1,addr.port=5555".into());
        s.nic = Some("user".into());
        s.accelerators
            .push(Accelerator::Patched { endpoint: "tcp://127.0.0.1:7010".into(), uart_log: "/l/accel1-uart.log".into() });
        s.device_opts = vec!["timeout-ms=5000".into(), "foo=bar".into()];
        s.extra_args = vec!["-s".into(), "a b".into()];
        let want = [
            "-M", "q35", "-accel", "tcg", "-m", "1024", "-smp", "2", "-nographic", "-no-reboot", "-bios", "qboot.rom",
            "-vga", "none", "-L", "/fw", "-kernel", "/b/guest/bzImage", "-initrd", "/b/guest/initramfs.cpio.gz",
            "-append",
            "console=ttyS0 panic=-1 cosim.run=\"info;gemm --m 4 --n 4 --k 4\" cosim.net=1 cosim.klog=0",
            "-netdev",
            "stream,server=on,addr.type=inet,addr.host=127.0.0.1,addr.port=5555,id=accnet0",
            "-netdev",
            "user,id=guestnet0",
            "-device",
            "e1000,netdev=guestnet0",
            "-chardev",
            "file,id=accuart0,path=/l/accel0-uart.log",
            "-device",
            "accelerator-pcie,id=accel0,addr=0x10.0,endpoint=ipc:///run/x/accel0,chardev=accuart0,netdev=accnet0,timeout-ms=5000,foo=bar",
            "-chardev",
            "file,id=accuart1,path=/l/accel1-uart.log",
            "-device",
            "accelerator-pcie,id=accel1,addr=0x11.0,endpoint=tcp://127.0.0.1:7010,chardev=accuart1,timeout-ms=5000,foo=bar",
            "-s",
            "a b",
        ];
        assert_eq!(argv(&s), want);
    }

    #[test]
    fn serve_mode_over_virtio_serial_on_a_unix_socket() {
        let mut s = spec();
        let ch = ServeChannel::Serial { socket: "/run/x/serve.sock".into() };
        s.append = kernel_append("", false, &serve_append(&ch, 100)).unwrap();
        s.serve = Some(ch);
        let mut want = DEFAULTS.to_vec();
        want.extend([
            "console=ttyS0 panic=-1 cosim.run=\"\" cosim.serve=\"--serial cosim.serve --read-latency 100\"",
            "-device",
            "virtio-serial-pci,id=serveser0",
            "-chardev",
            "socket,id=serve0,path=/run/x/serve.sock,server=on,wait=off",
            "-device",
            "virtserialport,bus=serveser0.0,chardev=serve0,name=cosim.serve",
            "-chardev",
            "file,id=accuart0,path=/l/accel0-uart.log",
            "-device",
            "accelerator-pcie,id=accel0,addr=0x10.0,endpoint=ipc:///run/x/accel0,chardev=accuart0",
        ]);
        assert_eq!(argv(&s), want);
    }

    #[test]
    fn serve_mode_over_tcp_forwards_one_loopback_port_to_the_server() {
        let mut s = spec();
        let ch = ServeChannel::Tcp { host_port: 41234 };
        s.append = kernel_append("", false, &serve_append(&ch, 0)).unwrap();
        s.serve = Some(ch);
        let mut want = DEFAULTS.to_vec();
        want.extend([
            "console=ttyS0 panic=-1 cosim.run=\"\" cosim.serve=\"--port 7000 --read-latency 0\" \
             cosim.serve_mac=52:54:00:c5:00:01 cosim.serve_ip=10.0.2.15/24",
            "-netdev",
            "user,id=servenet0,restrict=on,hostfwd=tcp:127.0.0.1:41234-10.0.2.15:7000",
            "-device",
            "virtio-net-pci,netdev=servenet0,mac=52:54:00:c5:00:01",
            "-chardev",
            "file,id=accuart0,path=/l/accel0-uart.log",
            "-device",
            "accelerator-pcie,id=accel0,addr=0x10.0,endpoint=ipc:///run/x/accel0,chardev=accuart0",
        ]);
        assert_eq!(argv(&s), want);
    }

    #[test]
    fn the_iommu_comes_before_every_device_and_accelerators_sit_at_known_slots() {
        let mut s = spec();
        s.iommu = true;
        s.accelerators
            .push(Accelerator::Patched { endpoint: "ipc:///run/x/accel1".into(), uart_log: "/l/accel1-uart.log".into() });
        let a = argv(&s);
        let iommu = a.iter().position(|x| x == "intel-iommu,intremap=on").unwrap();
        let first_dev = a.iter().position(|x| x.starts_with("accelerator-pcie")).unwrap();
        assert!(iommu < first_dev && a[iommu - 1] == "-device", "{a:?}");
        assert!(a[first_dev].contains(",addr=0x10.0,") && a[first_dev + 4].contains(",addr=0x11.0,"), "{a:?}");
        assert_eq!(accel_bdf(1), "0000:00:11.0");
        assert_eq!(accel_param(2, false), "cosim.accel=0000:00:10.0,0000:00:11.0");
        assert_eq!(accel_param(1, true), "cosim.accel=0000:00:10.0 intel_iommu=on cosim.vfio=all");
        assert_eq!(accel_param(0, true), "intel_iommu=on cosim.vfio=all");
        assert_eq!(accel_param(0, false), "");
        assert_eq!(accel_bdf(ACCEL_MAX - 1), "0000:00:1e.0");
    }

    #[test]
    fn workload_joins_items_and_refuses_what_the_command_line_cannot_carry() {
        assert_eq!(workload(&[]).unwrap(), DEFAULT_RUN);
        assert_eq!(workload(&["info".into(), "sh:echo a b".into()]).unwrap(), "info;sh:echo a b");
        for bad in ["a;b", "sh:echo \"x\""] {
            let e = workload(&["info".into(), bad.into()]).unwrap_err();
            assert!(matches!(&e, Error::RunItem { item } if item == bad), "{e}");
        }
    }

    #[test]
    fn kernel_append_is_bounded_by_the_kernel_limit() {
        let fixed = kernel_append("", false, "").unwrap().len();
        assert_eq!(fixed, "console=ttyS0 panic=-1 cosim.run=\"\"".len());
        let fits = "x".repeat(APPEND_MAX - fixed);
        assert_eq!(kernel_append(&fits, false, "").unwrap().len(), APPEND_MAX);
        let e = kernel_append(&fits, false, "y").unwrap_err();
        assert_eq!(e.to_string(), "kernel command line is 2049 bytes, the limit is 2047: shorten the --run items");
    }

    #[test]
    fn shell_line_quotes_arguments_with_spaces_or_quotes() {
        let s = shell_line(Path::new("/q/qemu"), &["-m".into(), "512".into(), "-append".into(), "a=\"b c\"".into()]);
        assert_eq!(s, "/q/qemu -m 512 -append 'a=\"b c\"'");
    }

    #[test]
    fn vfio_user_mode_shares_the_guest_ram_and_gives_each_accelerator_a_json_device_at_its_slot() {
        let mut s = spec();
        s.accelerators = (0..2).map(|i| Accelerator::VfioUser { socket: format!("/run/x/accel{i}.sock").into() }).collect();
        s.append = kernel_append(&workload(&[]).unwrap(), false, &accel_param(2, false)).unwrap();
        assert!(s.shared_ram());
        let mut want = vec![
            "-M",
            "q35,memory-backend=cosim-ram",
            "-object",
            "memory-backend-memfd,id=cosim-ram,size=512M,share=on",
        ];
        // The rest of the fixed part as in patched mode, without its "-M q35".
        want.extend(&DEFAULTS[2..]);
        want.extend([
            "console=ttyS0 panic=-1 cosim.run=\"gemm --m 64 --n 64 --k 64 --seed 1 --check\" \
             cosim.accel=0000:00:10.0,0000:00:11.0",
            "-device",
            r#"{"driver":"vfio-user-pci","id":"accel0","addr":"0x10.0","socket":{"path":"/run/x/accel0.sock","type":"unix"}}"#,
            "-device",
            r#"{"driver":"vfio-user-pci","id":"accel1","addr":"0x11.0","socket":{"path":"/run/x/accel1.sock","type":"unix"}}"#,
        ]);
        assert_eq!(argv(&s), want);
        // Each device argument is JSON that names the same slots as the patched device's.
        for (i, dev) in argv(&s).iter().filter(|a| a.starts_with('{')).enumerate() {
            let v: serde_json::Value = serde_json::from_str(dev).unwrap();
            assert_eq!(v["addr"], format!("0x{:02x}.0", ACCEL_FIRST_SLOT as usize + i), "{dev}");
            assert_eq!(accel_bdf(i), format!("0000:00:{}", v["addr"].as_str().unwrap().trim_start_matches("0x")));
        }
        // The shared backend is as large as the guest RAM.
        s.memory_mib = 1024;
        assert!(argv(&s).contains(&"memory-backend-memfd,id=cosim-ram,size=1024M,share=on".to_string()));
        assert!(!spec().shared_ram(), "the patched device needs no shared RAM");
    }

    #[test]
    fn vfio_user_device_options_become_json_members_and_paths_are_escaped() {
        let mut s = spec();
        s.accelerators = vec![Accelerator::VfioUser { socket: "/run/a \"b\"/accel0.sock".into() }];
        s.device_opts = vec!["x-msg-timeout=10000".into(), "x-flag=true".into(), "rombar=0".into(), "x-name=on".into()];
        let a = argv(&s);
        let dev = a.iter().find(|x| x.starts_with('{')).unwrap();
        let v: serde_json::Value = serde_json::from_str(dev).unwrap_or_else(|e| panic!("{dev}: {e}"));
        assert_eq!(v["socket"]["path"], "/run/a \"b\"/accel0.sock");
        assert_eq!(v["socket"]["type"], "unix");
        assert_eq!(v["x-msg-timeout"], 10000);
        assert_eq!(v["x-flag"], true);
        assert_eq!(v["rombar"], 0);
        assert_eq!(v["x-name"], "on");
        assert!(!a.iter().any(|x| x == "-chardev"), "no UART chardev without the patched device: {a:?}");
    }

    #[test]
    fn device_help_is_searched_for_the_exact_driver_name() {
        let help = "Storage devices:\nname \"nvme\", bus PCI, desc \"Non-Volatile Memory Express\"\n\n\
                    Misc devices:\nname \"vfio-pci\", bus PCI, desc \"VFIO-based PCI device assignment\"\n\
                    name \"vfio-user-pci\", bus PCI, desc \"VFIO over socket PCI device assignment\"\n";
        assert!(device_help_lists(help, VFIO_USER_DEVICE));
        assert!(device_help_lists(help, "vfio-pci"));
        let old = help.replace("name \"vfio-user-pci\"", "name \"vfio-user-pci-x\"");
        assert!(!device_help_lists(&old, VFIO_USER_DEVICE), "a longer name that starts alike is not it");
        assert!(!device_help_lists("", VFIO_USER_DEVICE));
    }
}
