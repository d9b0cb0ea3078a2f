/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR Apache-2.0 */
/*
 * cosim_accel ioctl ABI: shared by the kernel module (guest/driver/cosim_accel.c) and the guest
 * tool, which uses the Rust definition in gemm-abi/src/lib.rs (module `ioctl`). The tests of that
 * crate compile this header with gcc and fail when a struct field's name, offset or size, an ioctl
 * number or a constant here differs from the Rust side: change both together.
 *
 * One character device per accelerator: /dev/accel0, /dev/accel1, ...
 * All structs have a fixed layout (explicit padding, 64-bit fields 8-byte aligned).
 * Register names refer to docs/register-map.md.
 */
#ifndef COSIM_ACCEL_IOCTL_H
#define COSIM_ACCEL_IOCTL_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define COSIM_ACCEL_ABI_VERSION 1

/* COSIM_ACCEL_IOC_INFO: identity and counters of one accelerator. */
struct cosim_accel_info {
	__u32 abi_version;   /* COSIM_ACCEL_ABI_VERSION */
	__u32 index;         /* N of /dev/accelN */
	__u16 vendor;        /* PCI vendor ID (0x1ded) */
	__u16 device;        /* PCI device ID (0xacc1) */
	__u8 revision;       /* PCI revision */
	__u8 pad0[3];
	__u32 id;            /* ID register, 0x47454d4d ("GEMM") */
	__u32 version;       /* VERSION register: major in [31:16], minor in [15:0] */
	__u32 array_rows;    /* ARRAY[7:0] */
	__u32 array_cols;    /* ARRAY[15:8] */
	__u32 max_dim;       /* MAX_DIM register */
	__u32 msix_vectors;  /* MSI-X vectors allocated by the driver */
	__u32 timeout_ms;    /* default job timeout (module parameter timeout_ms) */
	__u32 pad1;
	__u64 jobs;          /* jobs completed without error by this driver instance */
	__u64 errors;        /* jobs that ended with a device error code */
	__u64 timeouts;      /* jobs that timed out or lost the device */
	__u64 irqs;          /* MSI-X interrupts received */
	__u64 jobs_done_reg; /* JOBS_DONE register (device-side count since reset) */
	char pci_name[32];   /* e.g. "0000:00:04.0", NUL-terminated */
	__u32 nic_rx_frames; /* NIC_RX_FRAMES register: Ethernet frames received by the RTL */
	__u32 nic_tx_frames; /* NIC_TX_FRAMES register */
	__u32 uart_rx_bytes; /* UART_RX_BYTES register */
	__u32 pad2;
};

/*
 * COSIM_ACCEL_IOC_GEMM: C = A x B on the device, packed row-major operands
 * (A: int8 m x k, B: int8 k x n, C: int32 m x n; see docs/register-map.md).
 * The driver copies A and B into DMA-coherent buffers, starts the job with the completion
 * interrupt enabled, waits for it (timeout), and copies C out.
 *
 * Return: 0 on success; -1 with errno:
 *   EINVAL     a dimension is 0 or above max_dim (checked before touching the device), or the
 *              device refused the job with ZERO_DIM / DIM_TOO_LARGE / BAD_STRIDE / MISALIGNED
 *   EBUSY      the device is still busy (an earlier job timed out), or it answered BUSY
 *   EIO        the device reported DMA_ERROR or an unknown code, or it stopped answering
 *              (registers read all ones: the simulation is gone)
 *   ETIMEDOUT  no completion interrupt within the timeout
 *   EINTR      interrupted by a signal while waiting
 *   EFAULT     a user pointer is bad;  ENOMEM  DMA buffers could not be allocated
 * On every return after the device was started, the out fields are written back (dev_error
 * tells the device's ERROR code, 0 if none).
 */
struct cosim_accel_gemm {
	/* in */
	__u32 m;
	__u32 n;
	__u32 k;
	__u32 timeout_ms;      /* 0: the module's default (parameter timeout_ms) */
	__u64 a_ptr;           /* user address of A: m*k bytes */
	__u64 b_ptr;           /* user address of B: k*n bytes */
	__u64 c_ptr;           /* user address of C: m*n*4 bytes (written) */
	/* out */
	__u64 cycles;          /* CYCLES register: START to interrupt request */
	__u64 dma_wait_cycles; /* DMA_WAIT register */
	__u64 device_ns;       /* guest time from START write to the interrupt being seen */
	__u32 dev_error;       /* ERROR register after the job (0 = OK) */
	__u32 pad0;
};

#define COSIM_ACCEL_IOC_MAGIC 'G'
#define COSIM_ACCEL_IOC_INFO  _IOR(COSIM_ACCEL_IOC_MAGIC, 0x01, struct cosim_accel_info)
#define COSIM_ACCEL_IOC_GEMM  _IOWR(COSIM_ACCEL_IOC_MAGIC, 0x02, struct cosim_accel_gemm)
/* Clears DONE/ERROR, tries a PCI function reset, frees buffers left by a timed-out job once the
 * device is idle. Returns 0, or EIO if the device does not answer with its ID afterwards. */
#define COSIM_ACCEL_IOC_RESET _IO(COSIM_ACCEL_IOC_MAGIC, 0x03)

/* ERROR register codes (docs/register-map.md, "Error codes"). */
#define COSIM_ACCEL_ERR_OK            0
#define COSIM_ACCEL_ERR_ZERO_DIM      1
#define COSIM_ACCEL_ERR_DIM_TOO_LARGE 2
#define COSIM_ACCEL_ERR_BAD_STRIDE    3
#define COSIM_ACCEL_ERR_MISALIGNED    4
#define COSIM_ACCEL_ERR_BUSY          5
#define COSIM_ACCEL_ERR_DMA_ERROR     6

#endif /* COSIM_ACCEL_IOCTL_H */
