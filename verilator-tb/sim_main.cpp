// cosim simulation main: drives the clock and reset of any top module that instantiates
// cosim_pcie_ep, until Ctrl-C / SIGTERM, a GOODBYE from the host, $finish or --max-cycles.
// While the design says it is idle (cosim_busy) and no endpoint has anything pending, it stops
// the clock and sleeps until the next message (docs/hdl-endpoint.md, "Idle sleep").
//
// This translation unit includes Verilator's V<top>__Dpi.h and the cbindgen header of the DPI
// bridge together, so a prototype mismatch between the SV imports and the Rust exports fails
// the build. The Makefile generates tb_ports.h (top name, clock and reset port names).
#include "tb_ports.h"

#include TB_TOP_HEADER
#include TB_DPI_HEADER
#include "cosim_dpi_bridge.h"

#include <verilated.h>
#if VM_TRACE
#include <verilated_fst_c.h>
#endif

#include <cerrno>
#include <chrono>
#include <cmath>
#include <ctime>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

static volatile std::sig_atomic_t g_signal = 0;

static void on_signal(int sig) { g_signal = sig; }

static const char* const kHelp =
    "usage: %s [--endpoint <ipc:///path/name | tcp://host:port[?peer=host] | vfio-user:///path>]\n"
    "          [options] [+plusargs]\n"
    "\n"
    "  --endpoint E      base endpoint of the (first) cosim_pcie_ep; same as +cosim_endpoint=E\n"
    "                    (default: the design's ENDPOINT parameter; empty means a private ipc\n"
    "                    endpoint in a fresh 0700 directory, printed on the ready line).\n"
    "                    vfio-user:///abs/path.sock: a vfio-user server on that Unix socket for\n"
    "                    an unpatched QEMU 10.1+ (-device vfio-user-pci, guest RAM shared);\n"
    "                    serves one QEMU at a time and waits for the next (docs/vfio-user.md)\n"
    "  --max-cycles N    stop after N clock cycles (default: run until stopped)\n"
    "  --clock-mhz F     clock frequency for simulated time and waveforms (default 100); also the\n"
    "                    design clock reported to the host, unless +cosim_clock_hz=N is given\n"
    "  --waves FILE.fst  write an FST waveform (the model must be built with tracing, the default)\n"
    "  --stats           also print statistics every 2 s while running\n"
    "  --no-dpi-poll     do not call the per-clock DPI poll (benchmark baseline only: the host\n"
    "                    is never served)\n"
    "  --no-idle-sleep   run the clock all the time. By default, when every cosim_busy instance\n"
    "                    of the design says idle and no endpoint has anything pending or in\n"
    "                    flight for the grace period, the clock stops (no cycles pass) and the\n"
    "                    simulation sleeps until the host sends something. A design without\n"
    "                    cosim_busy never sleeps; --max-cycles implies --no-idle-sleep\n"
    "  --idle-grace-us N quiet time before sleeping, in microseconds of wall time (default 500)\n"
    "  --idle-throttle   obsolete, accepted: idle sleep is the default\n"
    "  --help            this text\n"
    "A flag's value may also be joined to it: --idle-grace-us=50.\n"
    "\n"
    "Plusargs: +cosim_endpoint=E, +cosim_endpoint@<instance>=E, +max_cycles=N, +clock_mhz=F,\n"
    "+waves=FILE, +cosim_no_dpi_poll, +cosim_mmio_timeout=N and the ID/BAR overrides of\n"
    "docs/hdl-endpoint.md. Prints 'cosim-sim: ready endpoint=E' on stderr once bound; ends on\n"
    "Ctrl-C, SIGTERM or a GOODBYE from the host (not in vfio-user mode), printing statistics.\n"
    "\n"
    "Environment: COSIM_KEY_FILE=F  shared key for tcp (required unless the endpoint and its\n"
    "?peer= are loopback; the host side needs the same key): docs/protocol.md, Access control.\n";

struct Options {
    std::string endpoint;
    unsigned long long max_cycles = 0;
    double clock_mhz = 100.0;
    bool clock_set = false;  // --clock-mhz or +clock_mhz given
    std::string waves;
    bool stats = false;
    bool no_poll = false;
    bool idle_sleep = true;
    long idle_grace_us = 500;
};

static bool starts_with(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }

static double thread_cpu_s() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void print_stats(const char* what, unsigned long long cycles, double wall_s, double cpu_s) {
    CosimSimStats s = cosim_sim_stats();
    std::fprintf(stderr,
                 "cosim-sim: %s cycles=%llu wall_s=%.3f cycles_per_s=%.0f mmio_reads=%llu mmio_writes=%llu "
                 "mmio_errors=%llu dma_reads=%llu dma_read_bytes=%llu dma_writes=%llu dma_write_bytes=%llu "
                 "irqs=%llu frames_tx=%llu frames_rx=%llu serial_tx=%llu serial_rx=%llu malformed=%llu "
                 "dropped=%llu sessions=%llu refused_pops=%llu resets=%llu dma_hold_s=%.3f sim_cpu_s=%.3f cycles_per_cpu_s=%.0f "
                 "clock_hz=%llu\n",
                 what, cycles, wall_s, wall_s > 0 ? cycles / wall_s : 0.0, (unsigned long long)s.mmio_reads,
                 (unsigned long long)s.mmio_writes, (unsigned long long)s.mmio_errors,
                 (unsigned long long)s.dma_reads, (unsigned long long)s.dma_read_bytes,
                 (unsigned long long)s.dma_writes, (unsigned long long)s.dma_write_bytes,
                 (unsigned long long)s.irqs, (unsigned long long)s.frames_tx, (unsigned long long)s.frames_rx,
                 (unsigned long long)s.serial_tx, (unsigned long long)s.serial_rx,
                 (unsigned long long)s.malformed, (unsigned long long)s.dropped, (unsigned long long)s.sessions,
                 (unsigned long long)s.refused_pops,
                 (unsigned long long)s.resets, s.dma_hold_us * 1e-6, cpu_s,
                 cpu_s > 0 ? cycles / cpu_s : 0.0, (unsigned long long)s.clock_hz);
}

// The idle sleep: every kCheckCycles clocks, asks the bridge whether the design is idle and
// nothing is pending; after the grace period of that, sleeps on the endpoints' eventfds with
// the clock stopped, until a message arrives (or a signal, or a stop request).
struct IdleSleep {
    static constexpr unsigned long long kCheckCycles = 256;
    bool enabled;
    std::chrono::microseconds grace;
    bool quiet = false;
    uint64_t mark = 0;
    std::chrono::steady_clock::time_point quiet_since{};
    unsigned long long sleeps = 0;
    double asleep_s = 0;
    const char* off_why = nullptr;

    IdleSleep(bool on, std::chrono::microseconds g) : enabled(on), grace(g) {
        if (!on) {
            off_why = "--no-idle-sleep or --max-cycles";
            return;
        }
        if (cosim_sim_idle().declared == 0) {
            enabled = false;
            off_why = "the design has no cosim_busy instance, so its idleness is unknown";
            std::fprintf(stderr, "cosim-sim: idle sleep off: %s (docs/hdl-endpoint.md, \"Idle sleep\")\n", off_why);
        }
    }

    // True once the design has said idle and the bridge has been quiet for the grace period.
    bool quiet_long_enough() {
        CosimIdle s = cosim_sim_idle();
        bool q = s.busy == 0 && !s.pending && s.bridge_mark == mark;
        mark = s.bridge_mark;
        if (!q) {
            quiet = false;
            return false;
        }
        auto now = std::chrono::steady_clock::now();
        if (!quiet) {
            quiet = true;
            quiet_since = now;
            return false;
        }
        return now - quiet_since >= grace;
    }

    // Sleeps with the clock stopped until a message arrives for any endpoint, a signal or a stop
    // request; every 100 ms it only looks at those (and prints --stats progress), no cycle passes.
    void sleep(std::chrono::steady_clock::time_point* next_report, unsigned long long cycles,
               std::chrono::steady_clock::time_point t0, double cpu0) {
        auto start = std::chrono::steady_clock::now();
        sleeps++;
        while (!g_signal && !cosim_sim_stop_requested()) {
            if (cosim_sim_sleep(100) != 0) break;
            if (next_report) {
                auto now = std::chrono::steady_clock::now();
                if (now >= *next_report) {
                    print_stats("progress", cycles, std::chrono::duration<double>(now - t0).count(),
                                thread_cpu_s() - cpu0);
                    *next_report = now + std::chrono::seconds(2);
                }
            }
        }
        asleep_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        quiet = false;  // a full grace period again before the next sleep
    }

    void report() const {
        if (off_why) {
            std::fprintf(stderr, "cosim-sim: idle sleep off: %s\n", off_why);
        } else {
            CosimWakeStats w = cosim_sim_wake_stats();
            std::fprintf(stderr,
                         "cosim-sim: idle sleep: sleeps=%llu asleep_s=%.3f grace_us=%lld wakes=%llu wake_us_p50=%.1f "
                         "wake_us_p99=%.1f wake_us_max=%.1f\n",
                         sleeps, asleep_s, static_cast<long long>(grace.count()), (unsigned long long)w.wakes,
                         w.p50_ns * 1e-3, w.p99_ns * 1e-3, w.max_ns * 1e-3);
        }
    }
};

int main(int argc, char** argv) {
    Options o;
    std::vector<std::string> vargs{argv[0]};
    // A flag's value follows it (--idle-grace-us 50) or is joined to it (--idle-grace-us=50).
    std::string joined;
    bool has_joined = false;
    auto need = [&](int& i, const char* flag) -> std::string {
        if (has_joined) {
            has_joined = false;
            return joined;
        }
        if (i + 1 >= argc) {
            std::fprintf(stderr, "cosim-sim: %s needs a value (see --help)\n", flag);
            std::exit(2);
        }
        return argv[++i];
    };
    // A number, all of it and finite: "50us", "", "nan" or "inf" is an error (exit 2), not 50 or 0.
    auto number = [](const char* flag, const std::string& v) -> double {
        char* end = nullptr;
        errno = 0;
        double d = std::strtod(v.c_str(), &end);
        if (v.empty() || *end != '\0' || errno == ERANGE || !std::isfinite(d)) {
            std::fprintf(stderr, "cosim-sim: %s wants a number, got '%s' (see --help)\n", flag, v.c_str());
            std::exit(2);
        }
        return d;
    };
    // A count of cycles: digits (decimal, 0x hex, or 0 octal, exact to 2^64 - 1) or a whole
    // number in exponent form ("2e6"); negative, fractional or 2^64 and above is an error.
    auto count = [&](const char* flag, const std::string& v) -> unsigned long long {
        bool digits = !v.empty() && v.find_first_not_of("0123456789abcdefABCDEFxX") == std::string::npos;
        if (digits) {
            char* end = nullptr;
            errno = 0;
            unsigned long long n = std::strtoull(v.c_str(), &end, 0);
            if (*end == '\0' && errno != ERANGE) return n;
        }
        double d = number(flag, v);
        if (d < 0 || d >= 18446744073709551616.0 || d != std::floor(d)) {
            std::fprintf(stderr, "cosim-sim: %s wants a whole number from 0 to 2^64 - 1, got '%s'\n", flag, v.c_str());
            std::exit(2);
        }
        return static_cast<unsigned long long>(d);
    };
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        has_joined = false;
        if (starts_with(a, "--") && a.find('=') != std::string::npos) {
            joined = a.substr(a.find('=') + 1);
            a.resize(a.find('='));
            has_joined = true;
        }
        if (a == "--help" || a == "-h") {
            std::printf(kHelp, argv[0]);
            return 0;
        } else if (a == "--endpoint") {
            o.endpoint = need(i, "--endpoint");
        } else if (a == "--max-cycles") {
            o.max_cycles = count("--max-cycles", need(i, "--max-cycles"));
        } else if (a == "--clock-mhz") {
            o.clock_mhz = number("--clock-mhz", need(i, "--clock-mhz"));
            o.clock_set = true;
        } else if (a == "--waves") {
            o.waves = need(i, "--waves");
        } else if (a == "--stats") {
            o.stats = true;
        } else if (a == "--no-dpi-poll") {
            o.no_poll = true;
        } else if (a == "--no-idle-sleep") {
            o.idle_sleep = false;
        } else if (a == "--idle-grace-us") {
            double g = number("--idle-grace-us", need(i, "--idle-grace-us"));
            o.idle_grace_us = g < 0 ? -1 : g > 1e9 ? 1000000000L : static_cast<long>(g);
        } else if (a == "--idle-throttle") {
            // Obsolete (a 1 ms sleep every 1024 cycles after 50 ms without messages): the idle
            // sleep replaces it and is the default.
            std::fprintf(stderr, "cosim-sim: --idle-throttle is obsolete and ignored: the idle sleep is the default\n");
        } else if (starts_with(a, "+max_cycles=")) {
            o.max_cycles = count("+max_cycles", a.substr(12));
        } else if (starts_with(a, "+clock_mhz=")) {
            o.clock_mhz = number("+clock_mhz", a.substr(11));
            o.clock_set = true;
        } else if (starts_with(a, "+waves=")) {
            o.waves = a.substr(7);
        } else if (starts_with(a, "+cosim_endpoint=")) {
            o.endpoint = a.substr(16);
        } else if (starts_with(a, "+")) {
            vargs.push_back(a);
        } else {
            std::fprintf(stderr, "cosim-sim: unknown argument '%s' (see --help)\n", argv[i]);
            return 2;
        }
        if (has_joined) {
            std::fprintf(stderr, "cosim-sim: %s takes no value, got '%s' (see --help)\n", a.c_str(), argv[i]);
            return 2;
        }
    }
    if (!(o.clock_mhz > 0)) {
        std::fprintf(stderr, "cosim-sim: --clock-mhz must be positive\n");
        return 2;
    }
    if (o.idle_grace_us < 0) {
        std::fprintf(stderr, "cosim-sim: --idle-grace-us must not be negative\n");
        return 2;
    }
    if (o.max_cycles) o.idle_sleep = false;  // a run bounded in cycles runs them all
    if (!o.endpoint.empty()) vargs.push_back("+cosim_endpoint=" + o.endpoint);
    if (o.no_poll) vargs.push_back("+cosim_no_dpi_poll");
    // One clock: the simulated one is also the design clock the shell reports in CONFIG, unless
    // the design clock is given on its own.
    bool clock_hz_given = false;
    for (auto& v : vargs) clock_hz_given |= starts_with(v, "+cosim_clock_hz=");
    if (o.clock_set && !clock_hz_given)
        vargs.push_back("+cosim_clock_hz=" + std::to_string(static_cast<unsigned long long>(o.clock_mhz * 1e6 + 0.5)));
    std::vector<const char*> cargs;
    for (auto& s : vargs) cargs.push_back(s.c_str());

    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND;  // a second Ctrl-C kills at once
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    // A peer that closes its end of a socket or pipe (a vfio-user client's interrupt
    // descriptor, for example) gives the write an error, which the bridge reports; it must not
    // end the simulation. ZeroMQ never raises SIGPIPE itself.
    std::signal(SIGPIPE, SIG_IGN);

    auto ctx = std::make_unique<VerilatedContext>();
    ctx->commandArgs(static_cast<int>(cargs.size()), cargs.data());
    ctx->timeunit(-12);
    ctx->timeprecision(-12);
#if VM_TRACE
    if (!o.waves.empty()) ctx->traceEverOn(true);
#endif
    auto top = std::make_unique<TB_TOP>(ctx.get(), "TOP");
#if VM_TRACE
    std::unique_ptr<VerilatedFstC> tfp;
    if (!o.waves.empty()) {
        tfp = std::make_unique<VerilatedFstC>();
        top->trace(tfp.get(), 99);
        tfp->open(o.waves.c_str());
    }
#else
    if (!o.waves.empty()) {
        std::fprintf(stderr, "cosim-sim: this model was built without tracing (WAVES=0); --waves ignored\n");
    }
#endif
    const uint64_t half_ps = static_cast<uint64_t>(1e6 / (2.0 * o.clock_mhz) + 0.5);

    // Time 0: initial blocks run here; every cosim_pcie_ep binds its endpoint.
    top->TB_CLK = 0;
    top->TB_RSTN = 0;
    top->eval();
    if (ctx->gotFinish()) {
        std::fprintf(stderr, "cosim-sim: the design finished during initialisation\n");
        return 1;
    }
    char eps[4096];
    if (cosim_sim_endpoints(eps, sizeof eps) == 0) {
        std::fprintf(stderr, "cosim-sim: no cosim_pcie_ep endpoint was started by the design\n");
        return 1;
    }
    std::fprintf(stderr, "cosim-sim: ready endpoint=%s\n", eps);
    std::fflush(stderr);

    const unsigned kResetCycles = 16;
    unsigned long long cycles = 0;
    auto t0 = std::chrono::steady_clock::now();
    const double cpu0 = thread_cpu_s();
    auto next_report = t0 + std::chrono::seconds(2);
    const char* why = "max-cycles reached";
    IdleSleep idle(o.idle_sleep, std::chrono::microseconds(o.idle_grace_us));
    for (;;) {
        if ((cycles & (IdleSleep::kCheckCycles - 1)) == 0 && idle.enabled && idle.quiet_long_enough()) {
            idle.sleep(o.stats ? &next_report : nullptr, cycles, t0, cpu0);
        }
        if ((cycles & 1023) == 0) {
            if (g_signal) {
                why = g_signal == SIGINT ? "interrupted (SIGINT)" : "terminated (SIGTERM)";
                break;
            }
            if (cosim_sim_stop_requested()) {
                why = "host said goodbye";
                break;
            }
            if (o.stats && (cycles & 0xfffff) == 0) {
                auto now = std::chrono::steady_clock::now();
                if (now >= next_report) {
                    print_stats("progress", cycles, std::chrono::duration<double>(now - t0).count(),
                                thread_cpu_s() - cpu0);
                    next_report = now + std::chrono::seconds(2);
                }
            }
        }
        if (o.max_cycles && cycles >= o.max_cycles) break;
        if (ctx->gotFinish()) {
            why = "$finish";
            break;
        }
        if (cycles == kResetCycles) top->TB_RSTN = 1;
        top->TB_CLK = 1;
        top->eval();
#if VM_TRACE
        if (tfp) tfp->dump(ctx->time());
#endif
        ctx->timeInc(half_ps);
        top->TB_CLK = 0;
        top->eval();
#if VM_TRACE
        if (tfp) tfp->dump(ctx->time());
#endif
        ctx->timeInc(half_ps);
        cycles++;
    }
    double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double cpu = thread_cpu_s() - cpu0;
    std::fprintf(stderr, "cosim-sim: stopping: %s\n", why);
    top->final();  // final blocks: every endpoint says goodbye and closes
#if VM_TRACE
    if (tfp) tfp->close();
#endif
    print_stats("stats", cycles, wall, cpu);
    idle.report();
    return 0;
}
