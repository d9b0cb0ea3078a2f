/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR Apache-2.0 */
/*
 * GEMM accelerator register map (docs/register-map.md): PCI identity, BAR0 register offsets,
 * fixed values and bit fields.
 *
 * GENERATED from gemm-abi/src/lib.rs by `make gen-gemm-abi`; do not edit. `make test-gemm`
 * fails when this file is stale. Plain integer macros, for the kernel module and user space.
 */
#ifndef COSIM_ACCEL_REGS_H
#define COSIM_ACCEL_REGS_H

/* PCI identity, BARs and MSI-X */
#define GEMM_PCI_VENDOR_ID           0x1ded      /* vendor ID */
#define GEMM_PCI_DEVICE_ID           0xacc1      /* device ID */
#define GEMM_PCI_SUBSYSTEM_VENDOR_ID 0x1ded      /* subsystem vendor ID */
#define GEMM_PCI_SUBSYSTEM_ID        0x0001      /* subsystem ID */
#define GEMM_PCI_CLASS_CODE          0x120000    /* class code */
#define GEMM_PCI_REVISION            1           /* revision ID */
#define GEMM_REGS_BAR                0           /* BAR of the registers */
#define GEMM_BAR0_SIZE               0x1000      /* bytes */
#define GEMM_BAR2_SIZE               0x4000      /* bytes: MSI-X table and PBA */
#define GEMM_MSIX_VECTORS            4           /* MSI-X vectors */

/* BAR0 registers: byte offsets (docs/register-map.md, "Registers") */
#define GEMM_REG_ID             0x000       /* RO: identifies the device ("GEMM" in ASCII) */
#define GEMM_REG_VERSION        0x004       /* RO: version of this register map */
#define GEMM_REG_ARRAY          0x008       /* RO: size of the MAC array (RTL parameters ROWS and COLS) */
#define GEMM_REG_MAX_DIM        0x00c       /* RO: largest M, N and K accepted (RTL parameter MAX_DIM) */
#define GEMM_REG_CTRL           0x010       /* WO: job control (a write acts on the bits set) */
#define GEMM_REG_STATUS         0x014       /* RO: job state */
#define GEMM_REG_ERROR          0x018       /* RO: code of the last job or refused START ("Error codes") */
#define GEMM_REG_MSIX_VECTOR    0x01c       /* RW: MSI-X vector raised on completion (default 0; 0 to 3, the endpoint drops requests for other vectors) */
#define GEMM_REG_M              0x020       /* RW: rows of A and C */
#define GEMM_REG_N              0x024       /* RW: columns of B and C */
#define GEMM_REG_K              0x028       /* RW: columns of A, rows of B */
#define GEMM_REG_LDA            0x02c       /* RW: row stride of A in elements (0 = K) */
#define GEMM_REG_LDB            0x030       /* RW: row stride of B in elements (0 = N) */
#define GEMM_REG_LDC            0x034       /* RW: row stride of C in elements (0 = N) */
#define GEMM_REG_A_ADDR_LO      0x038       /* RW: guest bus address of A, bits 31:0 */
#define GEMM_REG_A_ADDR_HI      0x03c       /* RW: bits 63:32 */
#define GEMM_REG_B_ADDR_LO      0x040       /* RW: guest bus address of B, bits 31:0 */
#define GEMM_REG_B_ADDR_HI      0x044       /* RW: bits 63:32 */
#define GEMM_REG_C_ADDR_LO      0x048       /* RW: guest bus address of C (4-byte aligned), bits 31:0 */
#define GEMM_REG_C_ADDR_HI      0x04c       /* RW: bits 63:32 */
#define GEMM_REG_CYCLES_LO      0x050       /* RO: clock cycles of the last job, START to interrupt request, bits 31:0 */
#define GEMM_REG_CYCLES_HI      0x054       /* RO: bits 63:32 */
#define GEMM_REG_BUSY_CYCLES_LO 0x058       /* RO: total cycles spent BUSY since reset, bits 31:0 */
#define GEMM_REG_BUSY_CYCLES_HI 0x05c       /* RO: bits 63:32 */
#define GEMM_REG_IDLE_CYCLES_LO 0x060       /* RO: total cycles spent not BUSY since reset, bits 31:0 */
#define GEMM_REG_IDLE_CYCLES_HI 0x064       /* RO: bits 63:32 */
#define GEMM_REG_DMA_WAIT_LO    0x068       /* RO: cycles of the last job spent waiting for DMA data or write responses, bits 31:0 */
#define GEMM_REG_DMA_WAIT_HI    0x06c       /* RO: bits 63:32 */
#define GEMM_REG_JOBS_DONE      0x070       /* RO: jobs completed since reset (successful or failed) */
#define GEMM_REG_SCRATCH        0x074       /* RW: free for software (tests) */
#define GEMM_REG_JOB_PRIORITY   0x078       /* RW: priority the next jobs ask for, read by a mediator that shares the device between VMs; the device only stores it (since 1.1) */
#define GEMM_REG_NIC_RX_FRAMES  0x080       /* RO: Ethernet frames received by the RTL */
#define GEMM_REG_NIC_TX_FRAMES  0x084       /* RO: Ethernet frames sent by the RTL */
#define GEMM_REG_UART_RX_BYTES  0x088       /* RO: bytes received on the UART */

/* Fixed register values */
#define GEMM_ID_VALUE      0x47454d4du /* what ID reads */
#define GEMM_VERSION_VALUE 0x00010001u /* what VERSION reads */

/* Register fields: masks, the shift of multi-bit fields, named values (not shifted) */
#define GEMM_VERSION_MINOR                 0x0000ffffu /* bits 15:0: minor version */
#define GEMM_VERSION_MINOR_SHIFT           0
#define GEMM_VERSION_MAJOR                 0xffff0000u /* bits 31:16: major version */
#define GEMM_VERSION_MAJOR_SHIFT           16
#define GEMM_ARRAY_ROWS                    0x000000ffu /* bits 7:0: MAC array rows */
#define GEMM_ARRAY_ROWS_SHIFT              0
#define GEMM_ARRAY_COLS                    0x0000ff00u /* bits 15:8: MAC array columns */
#define GEMM_ARRAY_COLS_SHIFT              8
#define GEMM_CTRL_START                    0x00000001u /* bit 0: starts a job */
#define GEMM_CTRL_IRQ_EN                   0x00000002u /* bit 1: latched with START: raise the MSI-X vector on completion */
#define GEMM_CTRL_CLEAR                    0x00000004u /* bit 2: clears DONE and ERROR */
#define GEMM_STATUS_BUSY                   0x00000001u /* bit 0: a job is running */
#define GEMM_STATUS_DONE                   0x00000002u /* bit 1: the last job finished; sticky until the next START or CLEAR */
#define GEMM_STATUS_ERROR                  0x00000004u /* bit 2: the last job or the last START failed; the code is in ERROR */
#define GEMM_JOB_PRIORITY_PRIORITY         0x00000003u /* bits 1:0: requested priority, 0 for the VM's default */
#define GEMM_JOB_PRIORITY_PRIORITY_SHIFT   0
#define GEMM_JOB_PRIORITY_PRIORITY_DEFAULT 0           /* value: the VM's default priority */
#define GEMM_JOB_PRIORITY_PRIORITY_LOW     1           /* value: low */
#define GEMM_JOB_PRIORITY_PRIORITY_MEDIUM  2           /* value: medium */
#define GEMM_JOB_PRIORITY_PRIORITY_HIGH    3           /* value: high */

/* What the UART sends after every reset */
#define GEMM_UART_BANNER "GEMM accelerator v1.1 ready\r\n"

#endif /* COSIM_ACCEL_REGS_H */
