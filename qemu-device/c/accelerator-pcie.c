/*
 * accelerator-pcie: a PCI device whose behaviour lives in an HDL simulation.
 *
 * Only what must be C lives here: QOM type registration, properties, MemoryRegionOps
 * trampolines and the small callbacks (pci_dma_read/pci_dma_write, msix_notify, NIC, chardev,
 * main-loop hooks) handed to the Rust library (cosim-qemu-device, header cosim_qemu_device.h)
 * as a table of function pointers. All device logic is in Rust.
 *
 * Properties: endpoint=, port=, timeout-ms=, netdev= (and mac=), chardev=, x-hold-bql= (benchmarks
 * only: keep the BQL while a read waits). See
 * docs/qemu-device.md in the cosim tree.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qemu/module.h"
#include "qemu/timer.h"
#include "qapi/error.h"
#include "hw/core/cpu.h"
#include "hw/pci/pci_device.h"
#include "hw/pci/msix.h"
#include "hw/qdev-properties.h"
#include "hw/qdev-properties-system.h"
#include "hw/resettable.h"
#include "system/system.h"
#include "chardev/char-fe.h"
#include "net/net.h"
#include "qom/object.h"

#include "cosim_qemu_device.h"
#include "cosim_qemu_device_stamp.h"

#define TYPE_ACCELERATOR_PCIE "accelerator-pcie"
OBJECT_DECLARE_SIMPLE_TYPE(AccelPcieState, ACCELERATOR_PCIE)

typedef struct AccelBar {
    AccelPcieState *s;
    uint8_t index;
} AccelBar;

struct AccelPcieState {
    PCIDevice parent_obj;

    /* properties */
    char *endpoint;
    uint32_t port;
    uint32_t timeout_ms;
    bool x_hold_bql;  /* benchmark baseline: keep the BQL while a read waits (as before) */
    NICConf conf;
    CharFrontend chr;

    CosimDevice *dev;
    CosimDeviceInfo info;
    MemoryRegion bar[COSIM_NUM_BARS];     /* what pci_register_bar sees (container) */
    MemoryRegion bar_io[COSIM_NUM_BARS];  /* forwarded to the HDL, below the MSI-X regions */
    AccelBar bar_ctx[COSIM_NUM_BARS];
    NICState *nic;
    QEMUTimer *tick;
    QEMUBH *poll_bh;
    Notifier exit_notifier;
    int fd;
    /* The main loop found the device held by another thread (a vCPU's MMIO read waiting with
     * the BQL released, which serves the link meanwhile): the fd handler is off until the
     * bottom half, which the device schedules when that thread leaves, polls again. */
    bool poll_deferred;
    /* A NIC frame or chardev input was held back in QEMU while the device was busy. */
    bool rx_held;
    /* accel_exit runs: nothing may re-arm the fd handler. */
    bool closing;
};

/* ---- callbacks for Rust (called with the BQL held) ---------------------------------------- */

static bool cb_dma_read(void *opaque, uint64_t addr, uint8_t *buf, size_t len)
{
    AccelPcieState *s = opaque;
    return pci_dma_read(PCI_DEVICE(s), addr, buf, len) == MEMTX_OK;
}

static bool cb_dma_write(void *opaque, uint64_t addr, const uint8_t *buf, size_t len)
{
    AccelPcieState *s = opaque;
    return pci_dma_write(PCI_DEVICE(s), addr, buf, len) == MEMTX_OK;
}

static void cb_msix_notify(void *opaque, uint16_t vector)
{
    AccelPcieState *s = opaque;
    if (msix_present(PCI_DEVICE(s))) {
        msix_notify(PCI_DEVICE(s), vector);  /* sets the pending bit if masked or disabled */
    }
}

static void cb_nic_send(void *opaque, const uint8_t *buf, size_t len)
{
    AccelPcieState *s = opaque;
    if (s->nic) {
        qemu_send_packet(qemu_get_queue(s->nic), buf, len);
    }
}

static void cb_serial_write(void *opaque, const uint8_t *buf, size_t len)
{
    AccelPcieState *s = opaque;
    if (qemu_chr_fe_backend_connected(&s->chr)) {
        qemu_chr_fe_write_all(&s->chr, buf, len);
    }
}

static void cb_schedule_poll(void *opaque)
{
    AccelPcieState *s = opaque;
    qemu_bh_schedule(s->poll_bh);
}

/* An MMIO read releases the BQL while it waits for the simulation, as hw/remote's proxy does,
 * so reads of other vCPUs to other devices overlap; the Rust core holds the device's own mutex
 * meanwhile. Not from a coroutine (none of our callers is one). */
static bool cb_unlock_global(void *opaque)
{
    if (!bql_locked() || qemu_in_coroutine()) {
        return false;
    }
    bql_unlock();
    return true;
}

static void cb_lock_global(void *opaque)
{
    bql_lock();
}

/* ---- main loop hooks ---------------------------------------------------------------------- */

static void accel_fd_read(void *opaque);

/* Busy: another thread holds the device (and drains the link); stop watching the fd, or the
 * main loop would spin on a readable fd, until the bottom half (scheduled by the device when
 * that thread leaves) polls successfully. */
static void accel_poll(AccelPcieState *s)
{
    if (cosim_device_poll(s->dev) == COSIM_STATUS_BUSY) {
        if (!s->poll_deferred) {
            s->poll_deferred = true;
            qemu_set_fd_handler(s->fd, NULL, NULL, NULL);
        }
    } else if (s->poll_deferred && !s->closing) {
        s->poll_deferred = false;
        qemu_set_fd_handler(s->fd, accel_fd_read, NULL, s);
    }
}

static void accel_poll_bh(void *opaque)
{
    AccelPcieState *s = opaque;

    accel_poll(s);
    if (s->rx_held && s->dev && !cosim_device_busy(s->dev)) {
        s->rx_held = false;
        if (s->nic) {
            qemu_flush_queued_packets(qemu_get_queue(s->nic));
        }
        if (qemu_chr_fe_backend_connected(&s->chr)) {
            qemu_chr_fe_accept_input(&s->chr);
        }
    }
}

static void accel_fd_read(void *opaque)
{
    accel_poll(opaque);
}

static void accel_tick(void *opaque)
{
    AccelPcieState *s = opaque;
    uint32_t next = cosim_device_tick(s->dev);
    timer_mod(s->tick, qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + next);
}

/* ---- MMIO trampolines --------------------------------------------------------------------- */

/* Only a vCPU's own access may wait for a busy device and release the BQL: it runs on a vCPU
 * thread and carries the CPU's attributes. A device's DMA into the BAR (pci_dma_*), qtest and
 * the monitor use MEMTXATTRS_UNSPECIFIED, gdbstub and the monitor's `x` set debug. (On hosts
 * whose KVM passes unspecified attributes for MMIO exits the lock is simply never released.) */
static bool accel_from_cpu(MemTxAttrs attrs)
{
    return current_cpu && !attrs.unspecified && !attrs.debug;
}

static MemTxResult accel_bar_read(void *opaque, hwaddr addr, uint64_t *data, unsigned size,
                                  MemTxAttrs attrs)
{
    AccelBar *b = opaque;
    uint64_t val = ~0ULL;
    cosim_device_mmio_read(b->s->dev, b->index, addr, size, accel_from_cpu(attrs), &val);
    *data = val;
    return MEMTX_OK;
}

static MemTxResult accel_bar_write(void *opaque, hwaddr addr, uint64_t val, unsigned size,
                                   MemTxAttrs attrs)
{
    AccelBar *b = opaque;
    cosim_device_mmio_write(b->s->dev, b->index, addr, size, val, accel_from_cpu(attrs));
    return MEMTX_OK;
}

static const MemoryRegionOps accel_bar_ops = {
    .read_with_attrs = accel_bar_read,
    .write_with_attrs = accel_bar_write,
    .endianness = DEVICE_LITTLE_ENDIAN,
    .valid = { .min_access_size = 1, .max_access_size = 8 },
    .impl = { .min_access_size = 1, .max_access_size = 8 },
};

/* ---- NIC and chardev ---------------------------------------------------------------------- */

/* While another thread is inside the device, frames and bytes wait in QEMU (the device must
 * not be waited for with the BQL released here); the bottom half lets them in afterwards. */
static bool accel_nic_can_receive(NetClientState *nc)
{
    AccelPcieState *s = qemu_get_nic_opaque(nc);
    if (s->dev && cosim_device_busy(s->dev)) {
        s->rx_held = true;
        return false;
    }
    return true;
}

static ssize_t accel_nic_receive(NetClientState *nc, const uint8_t *buf, size_t size)
{
    AccelPcieState *s = qemu_get_nic_opaque(nc);
    if (cosim_device_nic_receive(s->dev, buf, size) == COSIM_STATUS_BUSY) {
        s->rx_held = true;
        return 0;  /* QEMU queues it; the bottom half flushes the queue */
    }
    return size;  /* taken, or dropped when the HDL is absent */
}

static NetClientInfo accel_net_info = {
    .type = NET_CLIENT_DRIVER_NIC,
    .size = sizeof(NICState),
    .can_receive = accel_nic_can_receive,
    .receive = accel_nic_receive,
};

static int accel_chr_can_receive(void *opaque)
{
    AccelPcieState *s = opaque;
    if (s->dev && cosim_device_busy(s->dev)) {
        s->rx_held = true;
        return 0;
    }
    return 4096;
}

static void accel_chr_receive(void *opaque, const uint8_t *buf, int size)
{
    AccelPcieState *s = opaque;
    cosim_device_serial_receive(s->dev, buf, size);
}

/* ---- QOM ---------------------------------------------------------------------------------- */

static void accel_exit_notify(Notifier *n, void *data);

static void accel_realize(PCIDevice *pdev, Error **errp)
{
    AccelPcieState *s = ACCELERATOR_PCIE(pdev);
    DeviceState *d = DEVICE(pdev);
    uint8_t *conf = pdev->config;
    char err[1024] = "";
    int i;

    CosimDeviceParams params = {
        .name = d->id,
        .endpoint = s->endpoint,
        .port = s->port,
        .timeout_ms = s->timeout_ms,
        .has_nic = s->conf.peers.ncs[0] != NULL,
        .has_serial = qemu_chr_fe_backend_connected(&s->chr),
    };
    CosimQemuCallbacks cb = {
        .opaque = s,
        .dma_read = cb_dma_read,
        .dma_write = cb_dma_write,
        .msix_notify = cb_msix_notify,
        .nic_send = cb_nic_send,
        .serial_write = cb_serial_write,
        .schedule_poll = cb_schedule_poll,
        .unlock_global = s->x_hold_bql ? NULL : cb_unlock_global,
        .lock_global = s->x_hold_bql ? NULL : cb_lock_global,
    };

    /* The INIT exchange happens here, never at class init: QEMU without the device never waits. */
    s->dev = cosim_device_new(&params, &cb, &s->info, err, sizeof(err));
    if (!s->dev) {
        error_setg(errp, "%s", err);
        return;
    }

    pci_config_set_vendor_id(conf, s->info.vendor_id);
    pci_config_set_device_id(conf, s->info.device_id);
    pci_config_set_revision(conf, s->info.revision);
    pci_config_set_class(conf, s->info.class_code >> 8);
    pci_config_set_prog_interface(conf, s->info.class_code & 0xff);
    pci_set_word(conf + PCI_SUBSYSTEM_VENDOR_ID, s->info.subsystem_vendor_id);
    pci_set_word(conf + PCI_SUBSYSTEM_ID, s->info.subsystem_id);

    for (i = 0; i < COSIM_NUM_BARS; i++) {
        uint8_t flags = s->info.bar_flags[i];
        uint8_t type;
        g_autofree char *name = NULL;
        g_autofree char *io_name = NULL;

        if (!s->info.bar_size[i]) {
            continue;
        }
        name = g_strdup_printf("accelerator-pcie-bar%d", i);
        io_name = g_strdup_printf("accelerator-pcie-bar%d-hdl", i);
        s->bar_ctx[i].s = s;
        s->bar_ctx[i].index = i;
        memory_region_init(&s->bar[i], OBJECT(s), name, s->info.bar_size[i]);
        memory_region_init_io(&s->bar_io[i], OBJECT(s), &accel_bar_ops, &s->bar_ctx[i],
                              io_name, s->info.bar_size[i]);
        /* Several vCPUs may be inside this region at once (a read waits with the BQL released);
         * the Rust core serialises them per device and refuses re-entry from one thread itself,
         * in place of QEMU's per-device re-entrancy guard (which would fail the second vCPU). */
        s->bar_io[i].disable_reentrancy_guard = true;
        /* Priority -1: the MSI-X table and PBA (priority 0) stay in QEMU. */
        memory_region_add_subregion_overlap(&s->bar[i], 0, &s->bar_io[i], -1);
        if (flags & COSIM_BAR_FLAG_IO) {
            type = PCI_BASE_ADDRESS_SPACE_IO;
        } else {
            type = PCI_BASE_ADDRESS_SPACE_MEMORY;
            if (flags & COSIM_BAR_FLAG_MEM64) {
                type |= PCI_BASE_ADDRESS_MEM_TYPE_64;
            }
            if (flags & COSIM_BAR_FLAG_PREFETCH) {
                type |= PCI_BASE_ADDRESS_MEM_PREFETCH;
            }
        }
        pci_register_bar(pdev, i, type, &s->bar[i]);
    }

    if (s->info.msix_vectors) {
        Error *local = NULL;
        if (msix_init(pdev, s->info.msix_vectors,
                      &s->bar[s->info.msix_table_bar], s->info.msix_table_bar,
                      s->info.msix_table_offset,
                      &s->bar[s->info.msix_pba_bar], s->info.msix_pba_bar,
                      s->info.msix_pba_offset, 0, &local) < 0) {
            error_propagate_prepend(errp, local,
                                    "the HDL's MSI-X layout does not fit its BARs (fix the HDL "
                                    "configuration): ");
            cosim_device_free(s->dev);
            s->dev = NULL;
            return;
        }
        for (i = 0; i < s->info.msix_vectors; i++) {
            msix_vector_use(pdev, i);
        }
    }

    if (s->conf.peers.ncs[0]) {
        qemu_macaddr_default_if_unset(&s->conf.macaddr);
        s->nic = qemu_new_nic(&accel_net_info, &s->conf, object_get_typename(OBJECT(s)),
                              d->id, &d->mem_reentrancy_guard, s);
        qemu_format_nic_info_str(qemu_get_queue(s->nic), s->conf.macaddr.a);
    }
    if (qemu_chr_fe_backend_connected(&s->chr)) {
        qemu_chr_fe_set_handlers(&s->chr, accel_chr_can_receive, accel_chr_receive, NULL, NULL,
                                 s, NULL, true);
    }

    s->poll_bh = qemu_bh_new_guarded(accel_poll_bh, s, &d->mem_reentrancy_guard);
    s->fd = cosim_device_notify_fd(s->dev);
    qemu_set_fd_handler(s->fd, accel_fd_read, NULL, s);
    s->tick = timer_new_ms(QEMU_CLOCK_REALTIME, accel_tick, s);
    timer_mod(s->tick, qemu_clock_get_ms(QEMU_CLOCK_REALTIME));
    s->exit_notifier.notify = accel_exit_notify;
    qemu_add_exit_notifier(&s->exit_notifier);
    /* Messages may have queued during the handshake; the fd edge may already be gone. */
    qemu_bh_schedule(s->poll_bh);
}

/* QEMU is exiting (quit, SIGTERM): say GOODBYE so the simulation can end, and flush it. */
static void accel_exit_notify(Notifier *n, void *data)
{
    AccelPcieState *s = container_of(n, AccelPcieState, exit_notifier);

    if (s->dev) {
        s->closing = true;
        qemu_set_fd_handler(s->fd, NULL, NULL, NULL);
        cosim_device_free(s->dev);  /* later calls with NULL are refused by the library */
        s->dev = NULL;
    }
}

static void accel_exit(PCIDevice *pdev)
{
    AccelPcieState *s = ACCELERATOR_PCIE(pdev);

    if (!s->tick) {
        return;  /* realize failed */
    }
    qemu_remove_exit_notifier(&s->exit_notifier);
    s->closing = true;
    qemu_set_fd_handler(s->fd, NULL, NULL, NULL);
    /* First the device: a vCPU may be inside it (a read waiting with the BQL released, when the
     * device is unplugged); the library waits for it, BQL released, before anything its
     * callbacks use (bottom half, NIC, MSI-X) goes away below. */
    cosim_device_free(s->dev);  /* NULL-safe */
    s->dev = NULL;
    timer_free(s->tick);
    s->tick = NULL;
    qemu_bh_delete(s->poll_bh);
    s->poll_bh = NULL;
    qemu_chr_fe_deinit(&s->chr, false);
    if (s->nic) {
        qemu_del_nic(s->nic);
        s->nic = NULL;
    }
    if (s->info.msix_vectors) {
        msix_uninit(pdev, &s->bar[s->info.msix_table_bar], &s->bar[s->info.msix_pba_bar]);
    }
}

static void accel_reset_hold(Object *obj, ResetType type)
{
    AccelPcieState *s = ACCELERATOR_PCIE(obj);
    if (s->dev) {
        cosim_device_reset(s->dev);
    }
}

/* Read-only QOM property "stats": the device's counters as one JSON object (qom-get). */
static char *accel_get_stats(Object *obj, Error **errp)
{
    AccelPcieState *s = ACCELERATOR_PCIE(obj);
    int attempt;

    if (!s->dev) {
        return g_strdup("{}");  /* not realized, or QEMU is exiting */
    }
    /* Sized first, then filled; another vCPU's read may change the counters in between (the
     * device is waited for with the BQL released), so a changed length asks again. */
    for (attempt = 0; attempt < 3; attempt++) {
        size_t n = cosim_device_stats_json(s->dev, NULL, 0);
        char *buf;

        if (n == 0) {  /* 0: the device is busy or failed; a JSON object is never empty */
            break;
        }
        buf = g_malloc(n + 1);
        if (cosim_device_stats_json(s->dev, buf, n + 1) == n) {
            return buf;
        }
        g_free(buf);
    }
    error_setg(errp, "accelerator-pcie: statistics not available");
    return NULL;
}

static const Property accel_properties[] = {
    DEFINE_PROP_STRING("endpoint", AccelPcieState, endpoint),
    DEFINE_PROP_UINT32("port", AccelPcieState, port, 0),
    DEFINE_PROP_UINT32("timeout-ms", AccelPcieState, timeout_ms, COSIM_DEFAULT_TIMEOUT_MS),
    DEFINE_PROP_BOOL("x-hold-bql", AccelPcieState, x_hold_bql, false),
    DEFINE_NIC_PROPERTIES(AccelPcieState, conf),
    DEFINE_PROP_CHR("chardev", AccelPcieState, chr),
};

static void accel_class_init(ObjectClass *klass, const void *data)
{
    DeviceClass *dc = DEVICE_CLASS(klass);
    PCIDeviceClass *k = PCI_DEVICE_CLASS(klass);
    ResettableClass *rc = RESETTABLE_CLASS(klass);

    k->realize = accel_realize;
    k->exit = accel_exit;
    /* Placeholders: realize replaces them with the HDL's answer. */
    k->vendor_id = 0x1ded;
    k->device_id = 0xacc1;
    k->class_id = PCI_CLASS_OTHERS;
    rc->phases.hold = accel_reset_hold;
    dc->desc = "PCI device backed by an HDL simulation (cosim, lib " COSIM_QEMU_DEVICE_LIB_HASH ")";
    dc->user_creatable = true;
    set_bit(DEVICE_CATEGORY_MISC, dc->categories);
    device_class_set_props(dc, accel_properties);
    object_class_property_set_description(klass, "endpoint",
        "HDL simulation endpoint: ipc:///<dir>/<name>, a path, or tcp://<host>[:<port>]");
    object_class_property_set_description(klass, "port",
        "base TCP port for a tcp endpoint without one (0: COSIM_PORT)");
    object_class_property_set_description(klass, "timeout-ms",
        "how long realize waits for the HDL's CONFIG and an MMIO read for its completion");
    object_class_property_add_str(klass, "stats", accel_get_stats, NULL);
    object_class_property_set_description(klass, "stats",
        "read-only: counters, MMIO read latency and the design clock as JSON (docs/qemu-device.md)");
}

static const TypeInfo accel_info = {
    .name = TYPE_ACCELERATOR_PCIE,
    .parent = TYPE_PCI_DEVICE,
    .instance_size = sizeof(AccelPcieState),
    .class_init = accel_class_init,
    .interfaces = (InterfaceInfo[]) {
        { INTERFACE_CONVENTIONAL_PCI_DEVICE },
        { },
    },
};

static void accel_register_types(void)
{
    type_register_static(&accel_info);
}

type_init(accel_register_types)
