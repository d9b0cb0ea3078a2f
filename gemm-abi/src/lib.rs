//! The GEMM accelerator's software interface, defined once: the BAR0 register map (offsets,
//! access, bit fields, fixed values), the ERROR codes, the PCI identity, the UART banner and the
//! ioctl ABI of the guest driver `cosim_accel`.
//!
//! Who reads it: the guest tool `accel-tool` ([`ioctl`]), the host-model tests against the RTL and
//! the software device model `cosim-fake-gemm` ([`regs`], [`ctrl`], [`status`], [`ErrorCode`],
//! [`pci`]). Who follows it:
//! - generated from it by `make gen-gemm-abi` (`tests/generated.rs`, which fails in
//!   `make test-gemm` when a checked-in copy is stale): `guest/driver/cosim_accel_regs.h` (the
//!   driver and the C++ testbench include it) and the tables of `docs/register-map.md`;
//! - checked against it by `make abi-gemm` (`cargo test -p cosim-gemm-abi`, part of
//!   `make test-gemm`): the RTL's localparams and register decoders in `hdl/gemm_accel/*.sv`
//!   (`tests/rtl.rs`), and the hand-written ioctl header `guest/driver/cosim_accel_ioctl.h`,
//!   compiled with gcc to compare every struct field's offset and size, the ioctl numbers and the
//!   constants (`tests/c_header.rs`).
//!
//! To change the map: edit this file, run `make gen-gemm-abi`, then change the RTL (and the
//! driver, the model) until `make abi-gemm` passes.
//!
//! Pure data: no I/O, no `unsafe`, `no_std`, no dependencies (the guest tool is linked static).
//!
//! # Versions (the VERSION register)
//! - 1.0: the first map.
//! - 1.1: adds JOB_PRIORITY (0x078, RW, [`job_priority`]): the priority a job asks for, 0 (the
//!   VM's default) to 3 (high). The device stores the two bits and does nothing else with them;
//!   `cosim-mediator`, when several VMs share one device, reads them (docs/mediator.md). Nothing
//!   else changes: software written for 1.0 works unchanged (a minor version only adds), and
//!   software that checks the major version (the guest driver) accepts 1.1.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use core::fmt;

/// Who may access a register (docs/register-map.md, "Registers"). Reads of write-only and
/// undefined offsets return 0; writes to read-only and undefined offsets are ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// RO: reads return the value, writes are ignored.
    ReadOnly,
    /// RW: software writes it and reads back what it wrote.
    ReadWrite,
    /// WO: writes act (see the register's fields), reads return 0.
    WriteOnly,
}

impl Access {
    /// `RO`, `RW` or `WO`, as in the docs and the C header.
    pub const fn as_str(self) -> &'static str {
        match self {
            Access::ReadOnly => "RO",
            Access::ReadWrite => "RW",
            Access::WriteOnly => "WO",
        }
    }

    /// The register's read decoder returns its value.
    pub const fn readable(self) -> bool {
        !matches!(self, Access::WriteOnly)
    }

    /// The register's write decoder acts on it.
    pub const fn writable(self) -> bool {
        !matches!(self, Access::ReadOnly)
    }
}

/// A bit field of a 32-bit register, as a mask of contiguous bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Field {
    /// Name, as in the docs (`START`); C and SV prefix it with the register (`CTRL_START`).
    pub name: &'static str,
    /// The field's bits.
    pub mask: u32,
    /// One line: what the field means.
    pub doc: &'static str,
    /// Named values of the field, lowest first (empty: the field is a number or a flag).
    pub values: &'static [FieldValue],
}

/// A named value of a [`Field`] (the field's value, not shifted into place: use [`field_put`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FieldValue {
    /// Name, as in the docs (`HIGH`); C prefixes it with register and field
    /// (`GEMM_JOB_PRIORITY_PRIORITY_HIGH`).
    pub name: &'static str,
    /// The value.
    pub value: u32,
    /// One line: what it means.
    pub doc: &'static str,
}

impl Field {
    /// Lowest bit.
    pub const fn lo(&self) -> u32 {
        self.mask.trailing_zeros()
    }

    /// Highest bit.
    pub const fn hi(&self) -> u32 {
        31 - self.mask.leading_zeros()
    }

    /// Number of bits.
    pub const fn width(&self) -> u32 {
        self.mask.count_ones()
    }
}

/// The value of the field `mask` in register value `value` (shifted down).
pub const fn field_get(value: u32, mask: u32) -> u32 {
    (value & mask) >> mask.trailing_zeros()
}

/// `field` shifted into the bits of `mask` (bits outside `mask` dropped).
pub const fn field_put(mask: u32, field: u32) -> u32 {
    (field << mask.trailing_zeros()) & mask
}

/// Mask of bits `hi..=lo`.
const fn bits(hi: u32, lo: u32) -> u32 {
    (u32::MAX >> (31 - hi)) & (u32::MAX << lo)
}

/// One 32-bit register of BAR0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Register {
    /// Name, as in the docs (`CTRL`); C prefixes it with `GEMM_REG_`, SV with `REG_`.
    pub name: &'static str,
    /// Byte offset in BAR0.
    pub offset: u64,
    /// RO, RW or WO.
    pub access: Access,
    /// The value a read always returns, for identification registers.
    pub value: Option<u32>,
    /// Bit fields, lowest first (empty: the register is one number).
    pub fields: &'static [Field],
    /// One line: what the register holds.
    pub doc: &'static str,
}

impl Register {
    /// The bits a write stores, for RW registers: those of its fields, or all 32 when it has none
    /// (other bits read 0, writes ignore them). 0 for RO and WO registers.
    pub const fn stored_bits(&self) -> u32 {
        if !matches!(self.access, Access::ReadWrite) {
            return 0;
        }
        if self.fields.is_empty() {
            return u32::MAX;
        }
        let (mut bits, mut i) = (0, 0);
        while i < self.fields.len() {
            bits |= self.fields[i].mask;
            i += 1;
        }
        bits
    }
}

/// Defines bit-field masks (`pub const NAME: u32`), the named values of fields (`pub const
/// VALUE: u32`, in braces after the field) and the table `FIELDS` in a module.
macro_rules! fields {
    ($(#[doc = $mdoc:literal])* $module:ident {
        $( #[doc = $doc:literal] $name:ident = $hi:literal $(: $lo:literal)?
            $({ $( #[doc = $vdoc:literal] $vname:ident = $val:literal; )* })? ; )*
    }) => {
        $(#[doc = $mdoc])*
        pub mod $module {
            #[allow(unused_imports)] // FieldValue: only modules with named values
            use super::{Field, FieldValue};
            $(
                #[doc = $doc]
                pub const $name: u32 = super::bits($hi, fields!(@lo $hi $($lo)?));
                $($(
                    #[doc = concat!("Value of ", stringify!($name), ": ", $vdoc)]
                    pub const $vname: u32 = $val;
                )*)?
            )*
            /// The fields above, lowest first.
            pub const FIELDS: &[Field] = &[ $( Field {
                name: stringify!($name),
                mask: $name,
                doc: $doc,
                values: &[ $($( FieldValue { name: stringify!($vname), value: $vname, doc: $vdoc }, )*)? ],
            }, )* ];
        }
    };
    (@lo $hi:literal) => { $hi };
    (@lo $hi:literal $lo:literal) => { $lo };
}

/// Defines register offsets (`pub const NAME: u64`) and the table `REGISTERS`.
macro_rules! registers {
    ($( #[doc = $doc:literal] $name:ident = $off:literal, $acc:ident
        $(, value = $val:ident)? $(, fields = $fields:ident)? ; )*) => {
        $( #[doc = $doc] pub const $name: u64 = $off; )*
        /// Every register of BAR0, by offset.
        pub const REGISTERS: &[Register] = &[ $( Register {
            name: stringify!($name),
            offset: $off,
            access: registers!(@access $acc),
            value: registers!(@value $($val)?),
            fields: registers!(@fields $($fields)?),
            doc: $doc,
        }, )* ];
    };
    (@access RO) => { Access::ReadOnly };
    (@access RW) => { Access::ReadWrite };
    (@access WO) => { Access::WriteOnly };
    (@value) => { None };
    (@value $val:ident) => { Some($val) };
    (@fields) => { &[] };
    (@fields $fields:ident) => { crate::$fields::FIELDS };
}

/// BAR0 register offsets (docs/register-map.md, "Registers"): 4 KiB, 32-bit little-endian
/// registers; an 8-byte access at a `_LO` offset reads or writes both halves at once.
pub mod regs {
    use super::{Access, Register};

    /// What the ID register reads: "GEMM" in ASCII.
    pub const ID_VALUE: u32 = 0x4745_4d4d;
    /// What the VERSION register reads: major 1, minor 1 (see "Versions" in the crate's docs).
    pub const VERSION_VALUE: u32 = 0x0001_0001;

    registers! {
        /// identifies the device ("GEMM" in ASCII)
        ID = 0x000, RO, value = ID_VALUE;
        /// version of this register map
        VERSION = 0x004, RO, value = VERSION_VALUE, fields = version;
        /// size of the MAC array (RTL parameters ROWS and COLS)
        ARRAY = 0x008, RO, fields = array;
        /// largest M, N and K accepted (RTL parameter MAX_DIM)
        MAX_DIM = 0x00c, RO;
        /// job control (a write acts on the bits set)
        CTRL = 0x010, WO, fields = ctrl;
        /// job state
        STATUS = 0x014, RO, fields = status;
        /// code of the last job or refused START ("Error codes")
        ERROR = 0x018, RO;
        /// MSI-X vector raised on completion (default 0; 0 to 3, the endpoint drops requests for other vectors)
        MSIX_VECTOR = 0x01c, RW;
        /// rows of A and C
        M = 0x020, RW;
        /// columns of B and C
        N = 0x024, RW;
        /// columns of A, rows of B
        K = 0x028, RW;
        /// row stride of A in elements (0 = K)
        LDA = 0x02c, RW;
        /// row stride of B in elements (0 = N)
        LDB = 0x030, RW;
        /// row stride of C in elements (0 = N)
        LDC = 0x034, RW;
        /// guest bus address of A, bits 31:0
        A_ADDR_LO = 0x038, RW;
        /// bits 63:32
        A_ADDR_HI = 0x03c, RW;
        /// guest bus address of B, bits 31:0
        B_ADDR_LO = 0x040, RW;
        /// bits 63:32
        B_ADDR_HI = 0x044, RW;
        /// guest bus address of C (4-byte aligned), bits 31:0
        C_ADDR_LO = 0x048, RW;
        /// bits 63:32
        C_ADDR_HI = 0x04c, RW;
        /// clock cycles of the last job, START to interrupt request, bits 31:0
        CYCLES_LO = 0x050, RO;
        /// bits 63:32
        CYCLES_HI = 0x054, RO;
        /// total cycles spent BUSY since reset, bits 31:0
        BUSY_CYCLES_LO = 0x058, RO;
        /// bits 63:32
        BUSY_CYCLES_HI = 0x05c, RO;
        /// total cycles spent not BUSY since reset, bits 31:0
        IDLE_CYCLES_LO = 0x060, RO;
        /// bits 63:32
        IDLE_CYCLES_HI = 0x064, RO;
        /// cycles of the last job spent waiting for DMA data or write responses, bits 31:0
        DMA_WAIT_LO = 0x068, RO;
        /// bits 63:32
        DMA_WAIT_HI = 0x06c, RO;
        /// jobs completed since reset (successful or failed)
        JOBS_DONE = 0x070, RO;
        /// free for software (tests)
        SCRATCH = 0x074, RW;
        /// priority the next jobs ask for, read by a mediator that shares the device between VMs; the device only stores it (since 1.1)
        JOB_PRIORITY = 0x078, RW, fields = job_priority;
        /// Ethernet frames received by the RTL
        NIC_RX_FRAMES = 0x080, RO;
        /// Ethernet frames sent by the RTL
        NIC_TX_FRAMES = 0x084, RO;
        /// bytes received on the UART
        UART_RX_BYTES = 0x088, RO;
    }

    /// The register at byte offset `offset` (any byte of it), if there is one.
    pub fn lookup(offset: u64) -> Option<&'static Register> {
        REGISTERS.iter().find(|r| r.offset == offset & !3)
    }
}

fields! {
    /// Fields of VERSION.
    version {
        /// minor version
        MINOR = 15:0;
        /// major version
        MAJOR = 31:16;
    }
}

fields! {
    /// Fields of ARRAY.
    array {
        /// MAC array rows
        ROWS = 7:0;
        /// MAC array columns
        COLS = 15:8;
    }
}

fields! {
    /// Bits of CTRL (write-only).
    ctrl {
        /// starts a job
        START = 0;
        /// latched with START: raise the MSI-X vector on completion
        IRQ_EN = 1;
        /// clears DONE and ERROR
        CLEAR = 2;
    }
}

fields! {
    /// Bits of STATUS.
    status {
        /// a job is running
        BUSY = 0;
        /// the last job finished; sticky until the next START or CLEAR
        DONE = 1;
        /// the last job or the last START failed; the code is in ERROR
        ERROR = 2;
    }
}

fields! {
    /// Fields of JOB_PRIORITY (since 1.1), and the values of PRIORITY. The device stores PRIORITY
    /// (reset 0, kept across jobs; bits above it read 0, writes ignore them) and does nothing else
    /// with it: `cosim-mediator`, when several VMs share one device, reads it to order their jobs
    /// (docs/mediator.md).
    job_priority {
        /// requested priority, 0 for the VM's default
        PRIORITY = 1:0 {
            /// the VM's default priority
            DEFAULT = 0;
            /// low
            LOW = 1;
            /// medium
            MEDIUM = 2;
            /// high
            HIGH = 3;
        };
    }
}

/// Defines [`ErrorCode`] from one line per code.
macro_rules! error_codes {
    ($( #[doc = $doc:literal] $variant:ident = $code:literal, $name:literal; )*) => {
        /// A value of the ERROR register (docs/register-map.md, "Error codes"). Decode a raw
        /// value with `ErrorCode::try_from(u32)`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( #[doc = $doc] $variant, )*
        }

        impl ErrorCode {
            /// Every code, in numeric order.
            pub const ALL: &'static [ErrorCode] = &[ $( ErrorCode::$variant, )* ];

            /// The value the ERROR register reads.
            pub const fn code(self) -> u32 {
                match self { $( ErrorCode::$variant => $code, )* }
            }

            /// Name, as in the docs and the C header (`ZERO_DIM`; C: `COSIM_ACCEL_ERR_ZERO_DIM`).
            pub const fn name(self) -> &'static str {
                match self { $( ErrorCode::$variant => $name, )* }
            }

            /// One line: what causes it.
            pub fn cause(self) -> &'static str {
                match self { $( ErrorCode::$variant => $doc.trim(), )* }
            }
        }
    };
}

error_codes! {
    /// no error
    Ok = 0, "OK";
    /// M, N or K is 0
    ZeroDim = 1, "ZERO_DIM";
    /// M, N or K above MAX_DIM
    DimTooLarge = 2, "DIM_TOO_LARGE";
    /// a non-zero LDA < K, LDB < N or LDC < N
    BadStride = 3, "BAD_STRIDE";
    /// C_ADDR not 4-byte aligned
    Misaligned = 4, "MISALIGNED";
    /// START while a job runs (the running job continues; its result is unaffected)
    Busy = 5, "BUSY";
    /// a DMA read or write completed with an error response
    DmaError = 6, "DMA_ERROR";
}

/// A value of the ERROR register that no [`ErrorCode`] has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownErrorCode(pub u32);

impl fmt::Display for UnknownErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown GEMM error code {}", self.0)
    }
}

impl TryFrom<u32> for ErrorCode {
    type Error = UnknownErrorCode;

    fn try_from(code: u32) -> Result<Self, Self::Error> {
        ErrorCode::ALL.iter().copied().find(|e| e.code() == code).ok_or(UnknownErrorCode(code))
    }
}

impl From<ErrorCode> for u32 {
    fn from(e: ErrorCode) -> u32 {
        e.code()
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.name())
    }
}

/// PCI identity, BARs and MSI-X of the accelerator (docs/register-map.md; the RTL top
/// `hdl/gemm_accel/gemm_top.sv` passes these to the endpoint shell).
pub mod pci {
    /// Vendor ID.
    pub const VENDOR_ID: u16 = 0x1ded;
    /// Device ID.
    pub const DEVICE_ID: u16 = 0xacc1;
    /// Subsystem vendor ID.
    pub const SUBSYSTEM_VENDOR_ID: u16 = 0x1ded;
    /// Subsystem ID.
    pub const SUBSYSTEM_ID: u16 = 0x0001;
    /// Class code: processing accelerator.
    pub const CLASS_CODE: u32 = 0x12_00_00;
    /// Revision ID.
    pub const REVISION: u8 = 1;
    /// BAR of the registers ([`crate::regs`]).
    pub const REGS_BAR: u8 = 0;
    /// Size of BAR0 (32-bit memory).
    pub const BAR0_SIZE: u64 = 0x1000;
    /// BAR0 is a 64-bit BAR.
    pub const BAR0_64BIT: bool = false;
    /// Size of BAR2 (64-bit memory; the MSI-X table and PBA).
    pub const BAR2_SIZE: u64 = 0x4000;
    /// BAR2 is a 64-bit BAR.
    pub const BAR2_64BIT: bool = true;
    /// MSI-X vectors.
    pub const MSIX_VECTORS: u16 = 4;
    /// BAR of the MSI-X table.
    pub const MSIX_TABLE_BAR: u8 = 2;
    /// Offset of the MSI-X table in its BAR.
    pub const MSIX_TABLE_OFFSET: u32 = 0;
    /// BAR of the MSI-X pending-bit array.
    pub const MSIX_PBA_BAR: u8 = 2;
    /// Offset of the PBA in its BAR.
    pub const MSIX_PBA_OFFSET: u32 = 0x2000;
}

/// What `gemm_top` builds by default (RTL parameters; ARRAY and MAX_DIM read them).
pub mod defaults {
    /// MAC array rows (`ARRAY[7:0]`).
    pub const ROWS: u32 = 4;
    /// MAC array columns (`ARRAY[15:8]`).
    pub const COLS: u32 = 4;
    /// Largest M, N and K (the MAX_DIM register).
    pub const MAX_DIM: u32 = 1024;

    // Engine parameters the device does not report (`gemm_accel`/`gemm_top` defaults and the
    // simulation's clock), for the performance models (`cosim-perf-model`); checked against the
    // RTL and the testbench by `tests/rtl.rs` (`engine_defaults_follow_the_rtl`).
    /// Columns of B held on chip (`gemm_accel` parameter NB).
    pub const NB: u32 = 64;
    /// Rows of A held on chip (`gemm_accel` parameter AM).
    pub const AM: u32 = 32;
    /// DMA read bursts in flight, half per read engine (`gemm_top` parameter RD_OUT).
    pub const RD_OUT: u32 = 32;
    /// Bytes of one DMA data beat: the AXI data width, one beat per clock at best.
    pub const DMA_BYTES_PER_CYCLE: u32 = 8;
    /// Largest DMA burst in beats (AXI INCR; bursts also never cross a 4 KiB boundary).
    pub const DMA_MAX_BURST_BEATS: u32 = 256;
    /// The simulation's default design clock in Hz (cosim_protocol::DEFAULT_CLOCK_HZ, the shell's
    /// `CLOCK_HZ` default; perf-model's tests check they agree).
    pub const CLOCK_HZ: u64 = 100_000_000;
}

/// What the UART sends after every reset (docs/register-map.md, "UART and Ethernet"). It names
/// the register map's version (`regs::VERSION_VALUE`; a unit test keeps the two equal).
pub const UART_BANNER: &[u8] = b"GEMM accelerator v1.1 ready\r\n";

/// The `cosim_accel` driver's ioctl ABI (`guest/driver/cosim_accel_ioctl.h`, which is checked
/// against this module field by field). One character device per accelerator, `/dev/accelN`.
/// Request numbers use the asm-generic encoding (x86, arm64, riscv).
pub mod ioctl {
    use core::mem::size_of;

    /// `COSIM_ACCEL_ABI_VERSION`: [`AccelInfo::abi_version`] of a driver speaking this ABI.
    pub const ABI_VERSION: u32 = 1;
    /// `COSIM_ACCEL_IOC_MAGIC`: the ioctl type byte.
    pub const MAGIC: u8 = b'G';

    /// `struct cosim_accel_info`: identity and counters of one accelerator.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct AccelInfo {
        /// [`ABI_VERSION`] of the driver.
        pub abi_version: u32,
        /// N of `/dev/accelN`.
        pub index: u32,
        /// PCI vendor ID.
        pub vendor: u16,
        /// PCI device ID.
        pub device: u16,
        /// PCI revision.
        pub revision: u8,
        /// Padding (0).
        pub pad0: [u8; 3],
        /// ID register.
        pub id: u32,
        /// VERSION register.
        pub version: u32,
        /// ARRAY rows.
        pub array_rows: u32,
        /// ARRAY columns.
        pub array_cols: u32,
        /// MAX_DIM register.
        pub max_dim: u32,
        /// MSI-X vectors allocated by the driver.
        pub msix_vectors: u32,
        /// Default job timeout (module parameter `timeout_ms`).
        pub timeout_ms: u32,
        /// Padding (0).
        pub pad1: u32,
        /// Jobs completed without error by this driver instance.
        pub jobs: u64,
        /// Jobs that ended with a device error code.
        pub errors: u64,
        /// Jobs that timed out or lost the device.
        pub timeouts: u64,
        /// MSI-X interrupts received.
        pub irqs: u64,
        /// JOBS_DONE register (device-side count since reset).
        pub jobs_done_reg: u64,
        /// PCI slot name, e.g. `0000:00:04.0`, NUL-terminated.
        pub pci_name: [u8; 32],
        /// NIC_RX_FRAMES register.
        pub nic_rx_frames: u32,
        /// NIC_TX_FRAMES register.
        pub nic_tx_frames: u32,
        /// UART_RX_BYTES register.
        pub uart_rx_bytes: u32,
        /// Padding (0).
        pub pad2: u32,
    }

    impl AccelInfo {
        /// [`AccelInfo::pci_name`] up to its NUL (bytes that are not UTF-8 end it too).
        pub fn pci_name(&self) -> &str {
            let end = self.pci_name.iter().position(|&c| c == 0).unwrap_or(self.pci_name.len());
            match core::str::from_utf8(&self.pci_name[..end]) {
                Ok(s) => s,
                Err(e) => core::str::from_utf8(&self.pci_name[..e.valid_up_to()]).unwrap_or(""),
            }
        }
    }

    /// `struct cosim_accel_gemm`: one job, C = A x B with packed row-major operands.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct AccelGemm {
        /// In: rows of A and C.
        pub m: u32,
        /// In: columns of B and C.
        pub n: u32,
        /// In: columns of A, rows of B.
        pub k: u32,
        /// In: timeout, 0 for the module's default.
        pub timeout_ms: u32,
        /// In: user address of A (m*k int8).
        pub a_ptr: u64,
        /// In: user address of B (k*n int8).
        pub b_ptr: u64,
        /// In: user address of C (m*n int32, written).
        pub c_ptr: u64,
        /// Out: CYCLES register.
        pub cycles: u64,
        /// Out: DMA_WAIT register.
        pub dma_wait_cycles: u64,
        /// Out: guest time from the START write to the interrupt being seen.
        pub device_ns: u64,
        /// Out: ERROR register after the job (0 = OK).
        pub dev_error: u32,
        /// Padding (0).
        pub pad0: u32,
    }

    const IOC_NONE: u32 = 0;
    const IOC_WRITE: u32 = 1;
    const IOC_READ: u32 = 2;

    /// Linux `_IOC(dir, type, nr, size)`, asm-generic layout: dir[31:30] size[29:16] type[15:8] nr[7:0].
    const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
        assert!(size < 1 << 14, "ioctl argument too large for the size field");
        (dir << 30) | ((size as u32) << 16) | ((MAGIC as u32) << 8) | nr
    }

    /// `COSIM_ACCEL_IOC_INFO`: `_IOR('G', 0x01, struct cosim_accel_info)`.
    pub const INFO: u32 = ioc(IOC_READ, 0x01, size_of::<AccelInfo>());
    /// `COSIM_ACCEL_IOC_GEMM`: `_IOWR('G', 0x02, struct cosim_accel_gemm)`.
    pub const GEMM: u32 = ioc(IOC_READ | IOC_WRITE, 0x02, size_of::<AccelGemm>());
    /// `COSIM_ACCEL_IOC_RESET`: `_IO('G', 0x03)`.
    pub const RESET: u32 = ioc(IOC_NONE, 0x03, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uart_banner_names_the_register_map_version() {
        let text = core::str::from_utf8(UART_BANNER).expect("ASCII banner");
        let word = text.split(' ').find(|w| w.starts_with('v')).expect("a vMAJOR.MINOR word");
        let (major, minor) = word[1..].split_once('.').expect("MAJOR.MINOR");
        let v = regs::VERSION_VALUE;
        assert_eq!(major.parse::<u32>(), Ok(v >> 16), "banner {text:?} vs VERSION {v:#x}");
        assert_eq!(minor.parse::<u32>(), Ok(v & 0xffff), "banner {text:?} vs VERSION {v:#x}");
    }

    #[test]
    fn registers_are_aligned_sorted_and_unique() {
        for w in regs::REGISTERS.windows(2) {
            assert!(w[0].offset < w[1].offset, "{} and {} out of order", w[0].name, w[1].name);
        }
        for r in regs::REGISTERS {
            assert_eq!(r.offset % 4, 0, "{} not 4-byte aligned", r.name);
            assert!(r.offset < pci::BAR0_SIZE, "{} outside BAR0", r.name);
        }
    }

    #[test]
    fn fields_do_not_overlap() {
        for r in regs::REGISTERS {
            let mut seen = 0;
            for f in r.fields {
                assert_eq!(seen & f.mask, 0, "{}.{} overlaps another field", r.name, f.name);
                assert_eq!(f.mask >> f.lo(), u32::MAX >> (32 - f.width()), "{}.{} not contiguous", r.name, f.name);
                seen |= f.mask;
            }
        }
    }

    #[test]
    fn field_helpers() {
        assert_eq!(array::ROWS, 0xff);
        assert_eq!(array::COLS, 0xff00);
        assert_eq!(ctrl::IRQ_EN, 2);
        assert_eq!(field_get(regs::VERSION_VALUE, version::MAJOR), 1);
        assert_eq!(field_put(array::COLS, 8) | field_put(array::ROWS, 4), 0x0804);
        assert_eq!(regs::lookup(regs::A_ADDR_HI + 2).map(|r| r.name), Some("A_ADDR_HI"));
        assert_eq!(regs::lookup(0x07c), None);
    }

    #[test]
    fn version_1_1_adds_job_priority() {
        assert_eq!(field_get(regs::VERSION_VALUE, version::MAJOR), 1);
        assert_eq!(field_get(regs::VERSION_VALUE, version::MINOR), 1);
        let r = regs::lookup(regs::JOB_PRIORITY + 1).expect("JOB_PRIORITY is in the map");
        assert_eq!((r.name, r.offset, r.access), ("JOB_PRIORITY", 0x078, Access::ReadWrite));
        assert_eq!(job_priority::PRIORITY, 0b11);
        assert_eq!(r.stored_bits(), 0b11);
        let values: [(&str, u32); 4] = [("DEFAULT", 0), ("LOW", 1), ("MEDIUM", 2), ("HIGH", 3)];
        let got: [(&str, u32); 4] = core::array::from_fn(|i| (r.fields[0].values[i].name, r.fields[0].values[i].value));
        assert_eq!(got, values);
        assert_eq!(r.fields[0].values.len(), 4);
        assert_eq!([job_priority::DEFAULT, job_priority::LOW, job_priority::MEDIUM, job_priority::HIGH], [0, 1, 2, 3]);
    }

    #[test]
    fn stored_bits_by_access_and_fields() {
        let bits = |off| regs::lookup(off).expect("register").stored_bits();
        assert_eq!(bits(regs::SCRATCH), u32::MAX, "RW without fields stores 32 bits");
        assert_eq!(bits(regs::CTRL), 0, "WO stores nothing");
        assert_eq!(bits(regs::ARRAY), 0, "RO stores nothing");
    }

    #[test]
    fn field_values_fit_their_field_and_are_sorted() {
        for r in regs::REGISTERS {
            for f in r.fields {
                for w in f.values.windows(2) {
                    assert!(
                        w[0].value < w[1].value,
                        "{}.{}: {} and {} out of order",
                        r.name,
                        f.name,
                        w[0].name,
                        w[1].name
                    );
                }
                for v in f.values {
                    assert_eq!(
                        field_get(field_put(f.mask, v.value), f.mask),
                        v.value,
                        "{}.{}.{} does not fit",
                        r.name,
                        f.name,
                        v.name
                    );
                }
            }
        }
    }

    #[test]
    fn error_codes_decode_with_try_from() {
        for (i, e) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(e.code(), i as u32, "codes are dense and in order");
            assert_eq!(ErrorCode::try_from(e.code()), Ok(*e));
        }
        assert_eq!(ErrorCode::try_from(7), Err(UnknownErrorCode(7)));
        assert_eq!(
            ErrorCode::Busy.cause(),
            "START while a job runs (the running job continues; its result is unaffected)"
        );
    }

    #[test]
    fn ioctl_numbers_match_the_linux_macros() {
        // _IOR('G', 1, 136), _IOWR('G', 2, 72), _IO('G', 3) as <linux/ioctl.h> computes them on x86.
        assert_eq!(ioctl::INFO, 0x8088_4701);
        assert_eq!(ioctl::GEMM, 0xc048_4702);
        assert_eq!(ioctl::RESET, 0x0000_4703);
    }

    #[test]
    fn pci_name_stops_at_nul() {
        let mut i = ioctl::AccelInfo::default();
        i.pci_name[..12].copy_from_slice(b"0000:00:04.0");
        assert_eq!(i.pci_name(), "0000:00:04.0");
    }
}
