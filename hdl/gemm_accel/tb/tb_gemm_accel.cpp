// Self-checking unit testbench for gemm_accel alone (no endpoint shell, no host model):
// a C++ AXI memory model serves the DMA master, register accesses drive the BAR0 slave.
// Usage: tb_gemm_accel [seed [read latency in cycles, default 20]]
#include "Vgemm_accel.h"
#include "verilated.h"
// Register map and error codes, generated from / checked against gemm-abi (docs/register-map.md).
#include "cosim_accel_ioctl.h"
#include "cosim_accel_regs.h"
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <random>
#include <string>
#include <vector>

static Vgemm_accel* top;
static uint64_t cycle = 0;
static std::mt19937_64 rng;
static const uint64_t MEM_SIZE = 64ull << 20;
static std::vector<uint8_t> mem(MEM_SIZE);
static uint64_t bad_lo = ~0ull, bad_hi = ~0ull;  // DMA to [bad_lo, bad_hi) answers SLVERR
static int msix_count = 0, msix_vec = -1;

struct Burst { uint64_t addr; unsigned len, id, beat; uint64_t ready_at; };
static std::deque<Burst> rq;            // read bursts (served possibly out of order by id)
static std::deque<Burst> wq;            // write addresses
static std::deque<unsigned> bq;         // write responses pending
static int latency = 20;
static std::string uart_out;                    // bytes the UART sent
static std::deque<uint8_t> uart_in;             // bytes to send to the UART
static std::vector<uint8_t> nic_cur;            // frame being received from the NIC port
static std::vector<std::vector<uint8_t>> nic_out;
static std::deque<std::vector<uint8_t>> nic_in; // frames to send
static size_t nic_in_pos = 0;

static bool bad(uint64_t a) { return a >= bad_lo && a < bad_hi; }

static void fail(const char* what) {
    fprintf(stderr, "FAIL at cycle %llu: %s\n", (unsigned long long)cycle, what);
    exit(1);
}

// One clock: the DMA slave and MSI-X acceptor are modelled here.
static void tick() {
    // decide handshakes on current values
    bool ar = top->m_axi_arvalid && top->m_axi_arready;
    bool r = top->m_axi_rvalid && top->m_axi_rready;
    bool aw = top->m_axi_awvalid && top->m_axi_awready;
    bool w = top->m_axi_wvalid && top->m_axi_wready;
    bool b = top->m_axi_bvalid && top->m_axi_bready;
    bool mx = top->msix_req_valid && top->msix_req_ready;
    Burst nb{};
    if (ar) nb = Burst{top->m_axi_araddr, top->m_axi_arlen, top->m_axi_arid, 0, cycle + latency};
    if (ar && (nb.addr & 7)) fail("unaligned read burst");
    if (ar && ((nb.addr & 0xfff) + (nb.len + 1) * 8 > 0x1000)) fail("read burst crosses 4K");
    Burst nw{};
    if (aw) nw = Burst{top->m_axi_awaddr, top->m_axi_awlen, top->m_axi_awid, 0, 0};
    if (aw && ((nw.addr & 0xfff) + (nw.len + 1) * 8 > 0x1000)) fail("write burst crosses 4K");
    if (w) {
        if (wq.empty()) fail("W beat without AW");
        Burst& cur = wq.front();
        uint64_t a = cur.addr + cur.beat * 8;
        for (int l = 0; l < 8; l++)
            if ((top->m_axi_wstrb >> l) & 1) {
                if (a + l >= MEM_SIZE) fail("write out of memory");
                if (!bad(a + l)) mem[a + l] = (uint8_t)(top->m_axi_wdata >> (8 * l));
            }
        bool last = cur.beat == cur.len;
        if (bool(top->m_axi_wlast) != last) fail("wlast mismatch");
        cur.beat++;
        if (last) { bq.push_back(bad(a) ? 2 : 0); wq.pop_front(); }
    }
    if (mx) { msix_count++; msix_vec = top->msix_req_vector; }
    bool ut = top->uart_tx_valid && top->uart_tx_ready;
    uint8_t ut_data = top->uart_tx_data;
    bool ur = top->uart_rx_valid && top->uart_rx_ready;
    bool nt = top->m_axis_tx_tvalid && top->m_axis_tx_tready;
    if (nt) {
        for (int l = 0; l < 8; l++)
            if ((top->m_axis_tx_tkeep >> l) & 1) nic_cur.push_back((uint8_t)(top->m_axis_tx_tdata >> (8 * l)));
        if (top->m_axis_tx_tlast) { nic_out.push_back(nic_cur); nic_cur.clear(); }
    }
    bool nr = top->s_axis_rx_tvalid && top->s_axis_rx_tready;
    if (r) {
        // the beat presented is rq[idx]; advance it
    }
    top->clk = 1;
    top->eval();
    cycle++;
    if (ar) rq.push_back(nb);
    if (aw) wq.push_back(nw);
    if (b) bq.pop_front();
    if (ut) uart_out.push_back((char)ut_data);
    if (ur) uart_in.pop_front();
    if (nr) {
        nic_in_pos += 8;
        if (nic_in_pos >= nic_in.front().size()) { nic_in.pop_front(); nic_in_pos = 0; }
    }
    top->uart_rx_valid = !uart_in.empty() && (rng() % 3) != 0;
    top->uart_rx_data = uart_in.empty() ? 0 : uart_in.front();
    top->uart_tx_ready = (rng() % 3) != 0;
    top->m_axis_tx_tready = (rng() % 3) != 0;
    top->s_axis_rx_tvalid = !nic_in.empty() && (rng() % 3) != 0;
    if (!nic_in.empty()) {
        const auto& f = nic_in.front();
        uint64_t d = 0;
        uint8_t keep = 0;
        for (size_t l = 0; l < 8 && nic_in_pos + l < f.size(); l++) {
            d |= (uint64_t)f[nic_in_pos + l] << (8 * l);
            keep |= 1 << l;
        }
        top->s_axis_rx_tdata = d;
        top->s_axis_rx_tkeep = keep;
        top->s_axis_rx_tlast = nic_in_pos + 8 >= f.size();
    }
    static size_t ridx = 0;
    if (r) {
        Burst& cur = rq[ridx];
        cur.beat++;
        if (cur.beat > cur.len) rq.erase(rq.begin() + ridx);
    }
    // present next read beat: pick a ready burst (random among the first few: out of order by id)
    top->m_axi_rvalid = 0;
    std::vector<size_t> ready;
    for (size_t i = 0; i < rq.size() && i < 4; i++)
        if (rq[i].ready_at <= cycle) ready.push_back(i);
    // a burst already started keeps going (no interleaving within a burst id isn't required,
    // but keep it simple: continue the started one)
    for (size_t i = 0; i < rq.size(); i++)
        if (rq[i].beat > 0) { ready.assign(1, i); break; }
    if (!ready.empty()) {
        ridx = ready[rng() % ready.size()];
        Burst& cur = rq[ridx];
        uint64_t a = cur.addr + cur.beat * 8;
        uint64_t d = 0;
        for (int l = 0; l < 8; l++) d |= (uint64_t)(a + l < MEM_SIZE ? mem[a + l] : 0xee) << (8 * l);
        top->m_axi_rvalid = 1;
        top->m_axi_rdata = d;
        top->m_axi_rid = cur.id;
        top->m_axi_rlast = cur.beat == cur.len;
        top->m_axi_rresp = bad(a) ? 2 : 0;
    }
    top->m_axi_bvalid = !bq.empty();
    top->m_axi_bresp = bq.empty() ? 0 : bq.front();
    top->m_axi_bid = 0;
    top->m_axi_arready = (rng() % 4) != 0;
    top->m_axi_awready = (rng() % 4) != 0;
    top->m_axi_wready = (rng() % 8) != 0;
    top->msix_req_ready = (rng() % 2) != 0;
    top->clk = 0;
    top->eval();
}

static void reg_write(uint32_t off, uint64_t val, unsigned size = 4) {
    top->s_axi_awaddr = off;
    top->s_axi_awlen = 0;
    top->s_axi_awuser = 0;
    top->s_axi_awvalid = 1;
    int n = 0;
    while (!top->s_axi_awready) { tick(); if (++n > 100) fail("awready"); }
    tick();
    top->s_axi_awvalid = 0;
    uint64_t lane = off & 7;
    top->s_axi_wdata = val << (8 * lane);
    top->s_axi_wstrb = (uint8_t)(((1u << size) - 1) << lane);
    top->s_axi_wlast = 1;
    top->s_axi_wvalid = 1;
    while (!top->s_axi_wready) { tick(); if (++n > 100) fail("wready"); }
    tick();
    top->s_axi_wvalid = 0;
    top->s_axi_bready = 1;
    while (!top->s_axi_bvalid) { tick(); if (++n > 100) fail("bvalid"); }
    tick();
    top->s_axi_bready = 0;
}

static uint64_t reg_read(uint32_t off, unsigned size = 4) {
    top->s_axi_araddr = off;
    top->s_axi_arlen = 0;
    top->s_axi_aruser = 0;
    top->s_axi_arvalid = 1;
    int n = 0;
    while (!top->s_axi_arready) { tick(); if (++n > 100) fail("arready"); }
    tick();
    top->s_axi_arvalid = 0;
    top->s_axi_rready = 1;
    while (!top->s_axi_rvalid) { tick(); if (++n > 100) fail("rvalid"); }
    uint64_t d = top->s_axi_rdata >> (8 * (off & 7));
    tick();
    top->s_axi_rready = 0;
    return size == 8 ? d : d & ((1ull << (8 * size)) - 1);
}

static uint64_t macs() {
    uint64_t a = reg_read(GEMM_REG_ARRAY, 4);
    return ((a & GEMM_ARRAY_ROWS) >> GEMM_ARRAY_ROWS_SHIFT) * ((a & GEMM_ARRAY_COLS) >> GEMM_ARRAY_COLS_SHIFT);
}

struct Job {
    uint32_t m, n, k, lda, ldb, ldc;
    uint64_t a, b, c;
};

static void program(const Job& j) {
    reg_write(GEMM_REG_M, j.m); reg_write(GEMM_REG_N, j.n); reg_write(GEMM_REG_K, j.k);
    reg_write(GEMM_REG_LDA, j.lda); reg_write(GEMM_REG_LDB, j.ldb); reg_write(GEMM_REG_LDC, j.ldc);
    reg_write(GEMM_REG_A_ADDR_LO, j.a, 8); reg_write(GEMM_REG_B_ADDR_LO, j.b, 8); reg_write(GEMM_REG_C_ADDR_LO, j.c, 8);
}

static uint32_t wait_done(uint64_t max = 50000000) {
    uint64_t t0 = cycle;
    int before = msix_count;
    while (msix_count == before) {
        tick();
        if (cycle - t0 > max) fail("job timeout");
    }
    uint32_t st = reg_read(GEMM_REG_STATUS);
    if (st & GEMM_STATUS_BUSY) fail("busy after interrupt");
    if (!(st & GEMM_STATUS_DONE)) fail("DONE not set after interrupt");
    return reg_read(GEMM_REG_ERROR);
}

static void run_gemm(uint32_t m, uint32_t n, uint32_t k, uint32_t lda, uint32_t ldb, uint32_t ldc,
                     uint64_t a, uint64_t b, uint64_t c) {
    uint32_t la = lda ? lda : k, lb = ldb ? ldb : n, lc = ldc ? ldc : n;
    for (uint32_t i = 0; i < m; i++) for (uint32_t x = 0; x < la; x++) mem[a + (uint64_t)i * la + x] = rng();
    for (uint32_t i = 0; i < k; i++) for (uint32_t x = 0; x < lb; x++) mem[b + (uint64_t)i * lb + x] = rng();
    // fill C (and the gaps between rows) with a pattern: gaps must stay untouched
    uint64_t cbytes = ((uint64_t)(m - 1) * lc + n) * 4;
    for (uint64_t x = 0; x < cbytes + 8; x++) mem[c + x] = 0xcd;
    if (c >= 4) for (int x = 1; x <= 4; x++) mem[c - x] = 0xcd;
    program(Job{m, n, k, lda, ldb, ldc, a, b, c});
    uint64_t t0 = cycle;
    reg_write(GEMM_REG_CTRL, GEMM_CTRL_START | GEMM_CTRL_IRQ_EN);
    uint32_t err = wait_done();
    if (err != COSIM_ACCEL_ERR_OK) { fprintf(stderr, "error %u\n", err); fail("gemm error"); }
    for (uint32_t i = 0; i < m; i++)
        for (uint32_t j = 0; j < n; j++) {
            int32_t s = 0;
            for (uint32_t x = 0; x < k; x++)
                s += (int32_t)(int8_t)mem[a + (uint64_t)i * la + x] * (int8_t)mem[b + (uint64_t)x * lb + j];
            uint64_t p = c + ((uint64_t)i * lc + j) * 4;
            int32_t got = (int32_t)(mem[p] | mem[p + 1] << 8 | mem[p + 2] << 16 | (uint32_t)mem[p + 3] << 24);
            if (got != s) {
                fprintf(stderr, "C[%u][%u] = %d, want %d (m=%u n=%u k=%u)\n", i, j, got, s, m, n, k);
                fail("mismatch");
            }
        }
    // gaps untouched
    for (uint32_t i = 0; i < m; i++)
        for (uint32_t j = n; j < lc && (i + 1 < m); j++)
            for (int x = 0; x < 4; x++)
                if (mem[c + ((uint64_t)i * lc + j) * 4 + x] != 0xcd) fail("gap in C overwritten");
    for (int x = 0; x < 8; x++) if (mem[c + cbytes + x] != 0xcd) fail("wrote past C");
    if (c >= 4) for (int x = 1; x <= 4; x++) if (mem[c - x] != 0xcd) fail("wrote before C");
    uint64_t cyc = reg_read(GEMM_REG_CYCLES_LO, 8), wait = reg_read(GEMM_REG_DMA_WAIT_LO, 8);
    printf("ok gemm %ux%ux%u ld=(%u,%u,%u) a=%#llx b=%#llx c=%#llx: %llu cycles (ideal %llu, dma wait %llu), tb %llu\n",
           m, n, k, lda, ldb, ldc, (unsigned long long)a, (unsigned long long)b, (unsigned long long)c,
           (unsigned long long)cyc, (unsigned long long)((uint64_t)m * n * k / macs()),
           (unsigned long long)wait, (unsigned long long)(cycle - t0));
}

static void expect_error(const Job& j, uint32_t code) {
    program(j);
    int before = msix_count;
    reg_write(GEMM_REG_CTRL, GEMM_CTRL_START | GEMM_CTRL_IRQ_EN);
    uint32_t err = wait_done();
    if (err != code) { fprintf(stderr, "got error %u want %u\n", err, code); fail("error code"); }
    if (!(reg_read(GEMM_REG_STATUS) & GEMM_STATUS_ERROR)) fail("STATUS.ERROR not set");
    if (msix_count != before + 1) fail("no interrupt");
    printf("ok error %u\n", code);
}

int main(int argc, char** argv) {
    Verilated::commandArgs(argc, argv);
    uint64_t seed = argc > 1 ? strtoull(argv[1], 0, 0) : 1;
    if (argc > 2) latency = atoi(argv[2]);
    printf("seed %llu\n", (unsigned long long)seed);
    rng.seed(seed);
    top = new Vgemm_accel;
    top->rst_n = 0;
    top->clk = 0;
    top->eval();
    for (int i = 0; i < 5; i++) tick();
    top->rst_n = 1;
    tick();
    // UART: banner at reset, then echo (bytes sent during the banner are queued).
    for (const char* p = "hello, echo \x01\xff"; *p; p++) uart_in.push_back((uint8_t)*p);
    for (int i = 0; i < 2000; i++) tick();
    if (uart_out != std::string(GEMM_UART_BANNER "hello, echo \x01\xff")) {
        fprintf(stderr, "uart: [%s] (%zu bytes)\n", uart_out.c_str(), uart_out.size());
        fail("UART banner/echo");
    }
    if (reg_read(GEMM_REG_UART_RX_BYTES) != 14) fail("UART_RX_BYTES");
    printf("ok uart\n");
    // NIC: echo with MAC addresses swapped; short frames unchanged; oversize dropped.
    std::vector<std::vector<uint8_t>> sent;
    for (size_t len : {60, 61, 64, 12, 11, 1, 1514, 9216, 9217, 100}) {
        std::vector<uint8_t> f(len);
        for (auto& v : f) v = rng();
        nic_in.push_back(f);
        if (len <= 9216) sent.push_back(f);
    }
    for (int i = 0; i < 20000 && !(nic_in.empty() && nic_out.size() == sent.size()); i++) tick();
    for (int i = 0; i < 100; i++) tick();
    if (nic_out.size() != sent.size()) fail("NIC frame count");
    for (size_t i = 0; i < sent.size(); i++) {
        auto want = sent[i];
        if (want.size() >= 12)
            for (int x = 0; x < 6; x++) std::swap(want[x], want[6 + x]);
        if (nic_out[i] != want) { fprintf(stderr, "frame %zu\n", i); fail("NIC echo"); }
    }
    if (reg_read(GEMM_REG_NIC_RX_FRAMES) != 10 || reg_read(GEMM_REG_NIC_TX_FRAMES) != 9) fail("NIC counters");
    printf("ok nic\n");
    if (reg_read(GEMM_REG_ID) != GEMM_ID_VALUE) fail("ID");
    if (reg_read(GEMM_REG_VERSION) != GEMM_VERSION_VALUE) fail("VERSION");
    if (reg_read(GEMM_REG_ID, 8) != ((uint64_t)GEMM_VERSION_VALUE << 32 | GEMM_ID_VALUE)) fail("ID+VERSION 8 bytes");
    reg_write(GEMM_REG_SCRATCH, 0xdeadbeef);
    if (reg_read(GEMM_REG_SCRATCH) != 0xdeadbeef) fail("scratch");
    reg_write(GEMM_REG_SCRATCH + 1, 0x55, 1);
    if (reg_read(GEMM_REG_SCRATCH) != 0xdead55ef) fail("scratch byte");
    if (reg_read(GEMM_REG_SCRATCH + 2, 2) != 0xdead) fail("scratch half");
    // JOB_PRIORITY (1.1): 0 after reset, stores PRIORITY, bits above it read 0, only byte 0 writes it.
    if (reg_read(GEMM_REG_JOB_PRIORITY) != GEMM_JOB_PRIORITY_PRIORITY_DEFAULT) fail("JOB_PRIORITY after reset");
    for (uint32_t p : {GEMM_JOB_PRIORITY_PRIORITY_LOW, GEMM_JOB_PRIORITY_PRIORITY_MEDIUM, GEMM_JOB_PRIORITY_PRIORITY_HIGH,
                       GEMM_JOB_PRIORITY_PRIORITY_DEFAULT}) {
        reg_write(GEMM_REG_JOB_PRIORITY, p << GEMM_JOB_PRIORITY_PRIORITY_SHIFT);
        if (reg_read(GEMM_REG_JOB_PRIORITY) != p << GEMM_JOB_PRIORITY_PRIORITY_SHIFT) fail("JOB_PRIORITY read back");
    }
    reg_write(GEMM_REG_JOB_PRIORITY, 0xfffffff9);
    if (reg_read(GEMM_REG_JOB_PRIORITY) != (0xfffffff9 & GEMM_JOB_PRIORITY_PRIORITY)) fail("JOB_PRIORITY high bits");
    reg_write(GEMM_REG_JOB_PRIORITY + 1, 0xff, 1);
    if (reg_read(GEMM_REG_JOB_PRIORITY) != (0xfffffff9 & GEMM_JOB_PRIORITY_PRIORITY)) fail("JOB_PRIORITY byte 1 write");
    reg_write(GEMM_REG_JOB_PRIORITY, 0xffffffff00000002ull, 8);  // JOB_PRIORITY and the undefined 0x07c
    if (reg_read(GEMM_REG_JOB_PRIORITY, 8) != 2) fail("JOB_PRIORITY 8-byte write");
    printf("ok job_priority\n");
    reg_write(GEMM_REG_MSIX_VECTOR, 2);
    struct { uint32_t m, n, k, lda, ldb, ldc; } sizes[] = {
        {1, 1, 1, 0, 0, 0}, {4, 4, 4, 0, 0, 0}, {17, 33, 9, 0, 0, 0}, {5, 3, 7, 11, 5, 9},
        {64, 64, 64, 0, 0, 0}, {3, 130, 5, 0, 0, 0}, {2, 7, 600, 601, 9, 8}, {9, 65, 3, 0, 70, 65},
        {70, 130, 33, 40, 131, 135}, {97, 200, 1, 0, 0, 0},
    };
    // Every JOB_PRIORITY value in turn: results unaffected (run_gemm checks C), value kept across jobs.
    uint32_t prio = 0;
    for (auto& s : sizes) {
        prio = (prio + 1) & GEMM_JOB_PRIORITY_PRIORITY;
        reg_write(GEMM_REG_JOB_PRIORITY, prio);
        run_gemm(s.m, s.n, s.k, s.lda, s.ldb, s.ldc, 0x100000 + (rng() % 64), 0x400000 + (rng() % 64),
                 0x800000 + 4 * (rng() % 16));
        if (msix_vec != 2) fail("vector");
        if (reg_read(GEMM_REG_JOB_PRIORITY) != prio) fail("JOB_PRIORITY after a job");
    }
    for (int i = 0; i < 20; i++) {
        uint32_t m = 1 + rng() % 40, n = 1 + rng() % 150, k = 1 + rng() % 80;
        uint32_t lda = rng() % 2 ? 0 : k + rng() % 5, ldb = rng() % 2 ? 0 : n + rng() % 5,
                 ldc = rng() % 2 ? 0 : n + rng() % 5;
        run_gemm(m, n, k, lda, ldb, ldc, 0x100000 + (rng() % 8192), 0x400000 + (rng() % 8192),
                 0x800000 + 4 * (rng() % 2048));
    }
    // errors
    Job ok{4, 4, 4, 0, 0, 0, 0x100000, 0x400000, 0x800000};
    Job j = ok; j.m = 0; expect_error(j, COSIM_ACCEL_ERR_ZERO_DIM);
    j = ok; j.k = 1025; expect_error(j, COSIM_ACCEL_ERR_DIM_TOO_LARGE);
    j = ok; j.lda = 3; expect_error(j, COSIM_ACCEL_ERR_BAD_STRIDE);
    j = ok; j.ldc = 2; expect_error(j, COSIM_ACCEL_ERR_BAD_STRIDE);
    j = ok; j.c = 0x800002; expect_error(j, COSIM_ACCEL_ERR_MISALIGNED);
    bad_lo = 0x400000; bad_hi = 0x400100;
    expect_error(ok, COSIM_ACCEL_ERR_DMA_ERROR);
    bad_lo = 0x800000; bad_hi = 0x800100;
    expect_error(ok, COSIM_ACCEL_ERR_DMA_ERROR);
    bad_lo = bad_hi = ~0ull;
    // BUSY: start a long job, start again
    program(Job{64, 64, 64, 0, 0, 0, 0x100000, 0x400000, 0x800000});
    reg_write(GEMM_REG_CTRL, GEMM_CTRL_START | GEMM_CTRL_IRQ_EN);
    reg_write(GEMM_REG_CTRL, GEMM_CTRL_START | GEMM_CTRL_IRQ_EN);
    if (reg_read(GEMM_REG_ERROR) != COSIM_ACCEL_ERR_BUSY || !(reg_read(GEMM_REG_STATUS) & GEMM_STATUS_ERROR) ||
        !(reg_read(GEMM_REG_STATUS) & GEMM_STATUS_BUSY))
        fail("BUSY refusal");
    if (wait_done() != COSIM_ACCEL_ERR_OK) fail("job after BUSY refusal");
    if (reg_read(GEMM_REG_STATUS) & GEMM_STATUS_ERROR) fail("ERROR still set");
    printf("ok busy\n");
    reg_write(GEMM_REG_CTRL, GEMM_CTRL_CLEAR);
    if (reg_read(GEMM_REG_STATUS) != 0) fail("CLEAR");
    printf("jobs done %llu, busy %llu idle %llu\n", (unsigned long long)reg_read(GEMM_REG_JOBS_DONE),
           (unsigned long long)reg_read(GEMM_REG_BUSY_CYCLES_LO, 8), (unsigned long long)reg_read(GEMM_REG_IDLE_CYCLES_LO, 8));
    printf("PASS\n");
    top->final();
    delete top;
    return 0;
}
