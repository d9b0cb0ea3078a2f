// cosim_pcie_ep: the PCIe endpoint shell a design instantiates to talk to QEMU through the cosim
// DPI bridge. Port names follow the AXI Bridge for PCIe that FPGA designs use (m_axi_* for
// MMIO from the host, s_axi_* for the design's DMA). See docs/hdl-endpoint.md.
//
// All DPI calls of one instance happen in one clocked block in a fixed order (the per-clock
// tick, then DMA read address, DMA write address and data, MSI-X, NIC and UART transmit, then
// what the host sent), so a DMA write always reaches the host before an interrupt requested in
// the same or a later cycle.
//
// A DPI call that takes something (cosim_ep_mmio_pop, _mmio_reject_queued, _dma_r, _nic_rx,
// _uart_rx) is made only inside an `if` on its bit of this clock's tick mask, never on the right
// of `&&`: Verilator evaluates a DPI call there even when the left side is false (5.006 emits
// `(bit != 0) & call()`). The bridge refuses a pop without its bit (nothing taken, a warning
// about a shell bug); nested conditions make no such call. See docs/hdl-endpoint.md.
module cosim_pcie_ep #(
  parameter string ENDPOINT = "",  // "": a private ipc endpoint (printed when ready); +cosim_endpoint=... overrides
  parameter logic [15:0] VENDOR_ID = 16'h1ded,
  parameter logic [15:0] DEVICE_ID = 16'hacc1,
  parameter logic [15:0] SUBSYS_VENDOR_ID = 16'h1ded,
  parameter logic [15:0] SUBSYS_ID = 16'h0001,
  parameter logic [23:0] CLASS_CODE = 24'h120000,
  parameter logic [7:0] REVISION = 8'h01,
  // BARs: size in bytes (0 = absent), 64-bit flag, prefetchable flag, AXI base added to the offset
  parameter longint unsigned BAR0_SIZE = 4096,
  parameter longint unsigned BAR1_SIZE = 0,
  parameter longint unsigned BAR2_SIZE = 16384,
  parameter longint unsigned BAR3_SIZE = 0,
  parameter longint unsigned BAR4_SIZE = 0,
  parameter longint unsigned BAR5_SIZE = 0,
  parameter bit BAR0_64 = 0, parameter bit BAR1_64 = 0, parameter bit BAR2_64 = 1,
  parameter bit BAR3_64 = 0, parameter bit BAR4_64 = 0, parameter bit BAR5_64 = 0,
  parameter bit BAR0_PREFETCH = 0, parameter bit BAR1_PREFETCH = 0, parameter bit BAR2_PREFETCH = 0,
  parameter bit BAR3_PREFETCH = 0, parameter bit BAR4_PREFETCH = 0, parameter bit BAR5_PREFETCH = 0,
  parameter longint unsigned BAR0_AXI_BASE = 0,
  parameter longint unsigned BAR1_AXI_BASE = 0,
  parameter longint unsigned BAR2_AXI_BASE = 0,
  parameter longint unsigned BAR3_AXI_BASE = 0,
  parameter longint unsigned BAR4_AXI_BASE = 0,
  parameter longint unsigned BAR5_AXI_BASE = 0,
  parameter int MSIX_VECTORS = 4,
  parameter int MSIX_TABLE_BAR = 2,
  parameter int MSIX_TABLE_OFFSET = 0,
  parameter int MSIX_PBA_BAR = 2,
  parameter int MSIX_PBA_OFFSET = 'h2000,
  parameter int AXI_ID_W = 4,
  // The design's clock on real hardware, in Hz: reported to the host in CONFIG (docs/protocol.md)
  // so tools turn cycle counts into time; it does not change the simulation. +cosim_clock_hz=N.
  parameter longint unsigned CLOCK_HZ = 100_000_000,
  // Additions (not in the AXI Bridge for PCIe): MMIO timeout, DMA reads in flight, reset pulse.
  parameter int MMIO_TIMEOUT_CYCLES = 100000,  // +cosim_mmio_timeout=N overrides
  parameter int MAX_DMA_READS = 16,
  parameter int RESET_CYCLES = 16,
  // Modelled DMA read latency in clocks: the data of a read accepted at clock c appears at
  // c + DMA_READ_LATENCY exactly (the clock waits for the host if needed), so cycle counts do
  // not depend on the host's speed. The default, 100 (1 us at 100 MHz), must equal the bridge's
  // DEFAULT_DMA_LATENCY (a dpi-bridge test checks). 0 = free-running: read data arrives
  // whenever the host answers. +cosim_dma_latency=N overrides.
  parameter int DMA_READ_LATENCY = 100
) (
  input  logic axi_aclk,
  input  logic axi_aresetn,
  output logic user_resetn,
  // MMIO from the host -> user registers: AXI4 master, BAR index on a*user
  output logic [63:0] m_axi_awaddr,
  output logic [7:0]  m_axi_awlen,
  output logic [2:0]  m_axi_awsize,
  output logic [1:0]  m_axi_awburst,
  output logic [2:0]  m_axi_awuser,
  output logic        m_axi_awvalid,
  input  logic        m_axi_awready,
  output logic [63:0] m_axi_wdata,
  output logic [7:0]  m_axi_wstrb,
  output logic        m_axi_wlast,
  output logic        m_axi_wvalid,
  input  logic        m_axi_wready,
  input  logic [1:0]  m_axi_bresp,
  input  logic        m_axi_bvalid,
  output logic        m_axi_bready,
  output logic [63:0] m_axi_araddr,
  output logic [7:0]  m_axi_arlen,
  output logic [2:0]  m_axi_arsize,
  output logic [1:0]  m_axi_arburst,
  output logic [2:0]  m_axi_aruser,
  output logic        m_axi_arvalid,
  input  logic        m_axi_arready,
  input  logic [63:0] m_axi_rdata,
  input  logic [1:0]  m_axi_rresp,
  input  logic        m_axi_rlast,
  input  logic        m_axi_rvalid,
  output logic        m_axi_rready,
  // DMA from the user design -> guest memory: AXI4 slave
  input  logic [AXI_ID_W-1:0] s_axi_awid,
  input  logic [63:0] s_axi_awaddr,
  input  logic [7:0]  s_axi_awlen,
  input  logic [2:0]  s_axi_awsize,
  input  logic [1:0]  s_axi_awburst,
  input  logic        s_axi_awvalid,
  output logic        s_axi_awready,
  input  logic [63:0] s_axi_wdata,
  input  logic [7:0]  s_axi_wstrb,
  input  logic        s_axi_wlast,
  input  logic        s_axi_wvalid,
  output logic        s_axi_wready,
  output logic [AXI_ID_W-1:0] s_axi_bid,
  output logic [1:0]  s_axi_bresp,
  output logic        s_axi_bvalid,
  input  logic        s_axi_bready,
  input  logic [AXI_ID_W-1:0] s_axi_arid,
  input  logic [63:0] s_axi_araddr,
  input  logic [7:0]  s_axi_arlen,
  input  logic [2:0]  s_axi_arsize,
  input  logic [1:0]  s_axi_arburst,
  input  logic        s_axi_arvalid,
  output logic        s_axi_arready,
  output logic [AXI_ID_W-1:0] s_axi_rid,
  output logic [63:0] s_axi_rdata,
  output logic [1:0]  s_axi_rresp,
  output logic        s_axi_rlast,
  output logic        s_axi_rvalid,
  input  logic        s_axi_rready,
  // MSI-X request
  input  logic        msix_req_valid,
  output logic        msix_req_ready,
  input  logic [10:0] msix_req_vector,
  // Ethernet: user -> network and network -> user
  input  logic [63:0] s_axis_nic_tx_tdata,
  input  logic [7:0]  s_axis_nic_tx_tkeep,
  input  logic        s_axis_nic_tx_tlast,
  input  logic        s_axis_nic_tx_tvalid,
  output logic        s_axis_nic_tx_tready,
  output logic [63:0] m_axis_nic_rx_tdata,
  output logic [7:0]  m_axis_nic_rx_tkeep,
  output logic        m_axis_nic_rx_tlast,
  output logic        m_axis_nic_rx_tvalid,
  input  logic        m_axis_nic_rx_tready,
  // UART byte streams: user -> host chardev, host -> user
  input  logic        uart_tx_valid,
  output logic        uart_tx_ready,
  input  logic [7:0]  uart_tx_data,
  output logic        uart_rx_valid,
  input  logic        uart_rx_ready,
  output logic [7:0]  uart_rx_data
);
  import cosim_dpi_pkg::*;

  chandle ctx;
  bit poll_en;
  int unsigned mmio_timeout;
  int dma_latency;

  // ---------------------------------------------------------------- configuration, open, close
  initial begin : open
    string ep;
    string inst;
    longint unsigned bar_size[6];
    bit bar_64[6];
    bit bar_pf[6];
    longint unsigned bar_base[6];
    logic [31:0] v;
    int vectors;
    int unsigned vendor, device, ssvid, ssid, cls, rev;
    longint unsigned clock_hz;
    ep = ENDPOINT;
    inst = $sformatf("%m");               // "<instance>.open": drop the block name
    inst = inst.substr(0, inst.len() - 6);
    vendor = 32'(VENDOR_ID); device = 32'(DEVICE_ID); ssvid = 32'(SUBSYS_VENDOR_ID);
    ssid = 32'(SUBSYS_ID); cls = 32'(CLASS_CODE); rev = 32'(REVISION);
    vectors = MSIX_VECTORS;
    mmio_timeout = MMIO_TIMEOUT_CYCLES;
    dma_latency = DMA_READ_LATENCY;
    bar_size = '{BAR0_SIZE, BAR1_SIZE, BAR2_SIZE, BAR3_SIZE, BAR4_SIZE, BAR5_SIZE};
    bar_64 = '{BAR0_64, BAR1_64, BAR2_64, BAR3_64, BAR4_64, BAR5_64};
    bar_pf = '{BAR0_PREFETCH, BAR1_PREFETCH, BAR2_PREFETCH, BAR3_PREFETCH, BAR4_PREFETCH, BAR5_PREFETCH};
    bar_base = '{BAR0_AXI_BASE, BAR1_AXI_BASE, BAR2_AXI_BASE, BAR3_AXI_BASE, BAR4_AXI_BASE, BAR5_AXI_BASE};
    // Plusargs: the generic form applies to every instance, "@<instance path>" to one.
    if ($value$plusargs("cosim_endpoint=%s", ep)) begin end
    if ($value$plusargs($sformatf("cosim_endpoint@%s=%%s", inst), ep)) begin end
    if ($value$plusargs("cosim_vendor_id=%h", v)) vendor = v;
    if ($value$plusargs("cosim_device_id=%h", v)) device = v;
    if ($value$plusargs("cosim_subsys_vendor_id=%h", v)) ssvid = v;
    if ($value$plusargs("cosim_subsys_id=%h", v)) ssid = v;
    if ($value$plusargs("cosim_class_code=%h", v)) cls = v;
    if ($value$plusargs("cosim_revision=%h", v)) rev = v;
    if ($value$plusargs("cosim_msix_vectors=%d", v)) vectors = int'(v);
    if ($value$plusargs("cosim_mmio_timeout=%d", v)) mmio_timeout = v;
    if ($value$plusargs("cosim_dma_latency=%d", v)) dma_latency = int'(v);
    clock_hz = CLOCK_HZ;
    if ($value$plusargs("cosim_clock_hz=%d", clock_hz)) begin end
    for (int i = 0; i < 6; i++) begin
      if ($value$plusargs($sformatf("cosim_bar%0d_size=%%h", i), v)) bar_size[i] = 64'(v);
    end
    poll_en = !$test$plusargs("cosim_no_dpi_poll");
    ctx = cosim_ep_new(inst, ep);
    if (cosim_ep_set_ids(ctx, vendor, device, ssvid, ssid, cls, rev) != 0)
      $fatal(1, "%m: invalid PCI identity");
    for (int i = 0; i < 6; i++) begin
      if (cosim_ep_set_bar(ctx, i, bar_size[i], bar_64[i], bar_pf[i], bar_base[i]) != 0)
        $fatal(1, "%m: invalid BAR%0d parameters", i);
    end
    if (cosim_ep_set_msix(ctx, vectors, MSIX_TABLE_BAR, MSIX_TABLE_OFFSET, MSIX_PBA_BAR, MSIX_PBA_OFFSET) != 0)
      $fatal(1, "%m: invalid MSI-X parameters");
    if (cosim_ep_set_max_reads(ctx, MAX_DMA_READS) != 0) $fatal(1, "%m: invalid MAX_DMA_READS");
    if (cosim_ep_set_dma_latency(ctx, dma_latency) != 0) $fatal(1, "%m: invalid DMA_READ_LATENCY %0d", dma_latency);
    if (cosim_ep_set_clock_hz(ctx, clock_hz) != 0) $fatal(1, "%m: invalid CLOCK_HZ %0d", clock_hz);
    if (cosim_ep_start(ctx) != 0)
      $fatal(1, "%m: cannot start the cosim endpoint %s (see the error above)", ep);
  end

  final cosim_ep_free(ctx);

  // ---------------------------------------------------------------- reset
  logic [15:0] host_rst_cnt;
  logic in_reset;
  assign user_resetn = axi_aresetn && (host_rst_cnt == '0);
  assign in_reset = !user_resetn;

  // ---------------------------------------------------------------- MMIO master state
  typedef enum logic [2:0] {M_IDLE, M_WRITE, M_B, M_READ, M_R} mstate_t;
  mstate_t mstate;
  logic mmio_write;
  logic mmio_timed_out;
  int unsigned mmio_timer;

  assign m_axi_awlen = 8'd0;
  assign m_axi_awburst = 2'b01;
  assign m_axi_wlast = 1'b1;
  assign m_axi_arlen = 8'd0;
  assign m_axi_arburst = 2'b01;
  assign m_axi_bready = (mstate == M_B);
  assign m_axi_rready = (mstate == M_R);

  // ---------------------------------------------------------------- DMA slave state
  typedef enum logic [1:0] {W_IDLE, W_DATA, W_RESP} wstate_t;
  wstate_t wstate;
  logic ar_full;

  assign s_axi_awready = !in_reset && (wstate == W_IDLE);
  assign s_axi_wready = !in_reset && (wstate == W_DATA);
  assign s_axi_arready = !in_reset && !ar_full;

  assign msix_req_ready = !in_reset;
  assign s_axis_nic_tx_tready = !in_reset;
  assign uart_tx_ready = !in_reset;

  // ---------------------------------------------------------------- the clocked DPI block
  always_ff @(posedge axi_aclk) begin : step
    int unsigned pend;
    bit b_write, b_last;
    longint unsigned l_addr, l_data;
    // DPI outputs are wider than the fields they fill.
    /* verilator lint_off UNUSEDSIGNAL */
    byte unsigned y_size, y_bar, y_strb, y_resp;
    int unsigned i_id;
    /* verilator lint_on UNUSEDSIGNAL */

    pend = 0;
    if (poll_en) pend = cosim_ep_tick(ctx);

    if (!axi_aresetn || (pend & PEND_RESET) != 0 || host_rst_cnt != '0) begin
      if ((pend & PEND_RESET) != 0) host_rst_cnt <= 16'(RESET_CYCLES);
      else if (!axi_aresetn) host_rst_cnt <= '0;
      else host_rst_cnt <= host_rst_cnt - 16'd1;
      mstate <= M_IDLE;
      m_axi_awvalid <= 1'b0;
      m_axi_wvalid <= 1'b0;
      m_axi_arvalid <= 1'b0;
      mmio_timed_out <= 1'b0;
      mmio_timer <= 0;
      mmio_write <= 1'b0;
      wstate <= W_IDLE;
      s_axi_bvalid <= 1'b0;
      s_axi_rvalid <= 1'b0;
      m_axis_nic_rx_tvalid <= 1'b0;
      uart_rx_valid <= 1'b0;
      ar_full <= 1'b0;
    end else begin
      // DMA read address (the tick above ran before it: its "full" answer decides ARREADY)
      ar_full <= (pend & PEND_AR_FULL) != 0;
      if (s_axi_arvalid && s_axi_arready)
        ar_full <= cosim_ep_dma_ar(ctx, 32'(s_axi_arid), s_axi_araddr, s_axi_arlen, {5'b0, s_axi_arsize},
                                   {6'b0, s_axi_arburst});
      // DMA write address, data, response
      case (wstate)
        W_IDLE: if (s_axi_awvalid) begin
          cosim_ep_dma_aw(ctx, 32'(s_axi_awid), s_axi_awaddr, s_axi_awlen, {5'b0, s_axi_awsize}, {6'b0, s_axi_awburst});
          wstate <= W_DATA;
        end
        W_DATA: if (s_axi_wvalid) begin
          if (cosim_ep_dma_w(ctx, s_axi_wdata, s_axi_wstrb, s_axi_wlast, i_id, y_resp)) begin
            s_axi_bid <= AXI_ID_W'(i_id);
            s_axi_bresp <= y_resp[1:0];
            s_axi_bvalid <= 1'b1;
            wstate <= W_RESP;
          end
        end
        default: if (s_axi_bready) begin
          s_axi_bvalid <= 1'b0;
          wstate <= W_IDLE;
        end
      endcase
      // MSI-X, NIC transmit, UART transmit (after DMA writes: they must not overtake them)
      if (msix_req_valid) cosim_ep_msix(ctx, {21'b0, msix_req_vector});
      if (s_axis_nic_tx_tvalid) cosim_ep_nic_tx(ctx, s_axis_nic_tx_tdata, s_axis_nic_tx_tkeep, s_axis_nic_tx_tlast);
      if (uart_tx_valid) cosim_ep_uart_tx(ctx, uart_tx_data);

      // Things the host sent, when their output register is free.
      // Each pop is nested under its bit (not `&&`, see the header).
      if (!s_axi_rvalid || s_axi_rready) begin
        s_axi_rvalid <= 1'b0;
        if ((pend & PEND_RBEAT) != 0) begin
          if (cosim_ep_dma_r(ctx, i_id, l_data, y_resp, b_last)) begin
            s_axi_rid <= AXI_ID_W'(i_id);
            s_axi_rdata <= l_data;
            s_axi_rresp <= y_resp[1:0];
            s_axi_rlast <= b_last;
            s_axi_rvalid <= 1'b1;
          end
        end
      end
      if (!m_axis_nic_rx_tvalid || m_axis_nic_rx_tready) begin
        m_axis_nic_rx_tvalid <= 1'b0;
        if ((pend & PEND_NIC_RX) != 0) begin
          if (cosim_ep_nic_rx(ctx, l_data, y_strb, b_last)) begin
            m_axis_nic_rx_tdata <= l_data;
            m_axis_nic_rx_tkeep <= y_strb;
            m_axis_nic_rx_tlast <= b_last;
            m_axis_nic_rx_tvalid <= 1'b1;
          end
        end
      end
      if (!uart_rx_valid || uart_rx_ready) begin
        uart_rx_valid <= 1'b0;
        if ((pend & PEND_UART_RX) != 0) begin
          if (cosim_ep_uart_rx(ctx, y_size)) begin
            uart_rx_data <= y_size;
            uart_rx_valid <= 1'b1;
          end
        end
      end

      // MMIO master
      if (mstate != M_IDLE) begin
        mmio_timer <= mmio_timer + 1;
        if (mmio_timer == mmio_timeout && !mmio_timed_out) begin
          mmio_timed_out <= 1'b1;
          cosim_ep_mmio_timeout(ctx, mmio_write, mmio_timer);
        end
        if (mmio_timed_out) begin
          if ((pend & PEND_MMIO) != 0) cosim_ep_mmio_reject_queued(ctx);
        end
      end
      case (mstate)
        M_IDLE: if ((pend & PEND_MMIO) != 0) begin
          if (cosim_ep_mmio_pop(ctx, b_write, l_addr, y_size, y_bar, l_data, y_strb)) begin
            mmio_timer <= 0;
            mmio_timed_out <= 1'b0;
            mmio_write <= b_write;
            if (b_write) begin
              m_axi_awaddr <= l_addr;
              m_axi_awsize <= y_size[2:0];
              m_axi_awuser <= y_bar[2:0];
              m_axi_wdata <= l_data;
              m_axi_wstrb <= y_strb;
              m_axi_awvalid <= 1'b1;
              m_axi_wvalid <= 1'b1;
              mstate <= M_WRITE;
            end else begin
              m_axi_araddr <= l_addr;
              m_axi_arsize <= y_size[2:0];
              m_axi_aruser <= y_bar[2:0];
              m_axi_arvalid <= 1'b1;
              mstate <= M_READ;
            end
          end
        end
        M_WRITE: begin
          if (m_axi_awready) m_axi_awvalid <= 1'b0;
          if (m_axi_wready) m_axi_wvalid <= 1'b0;
          if ((!m_axi_awvalid || m_axi_awready) && (!m_axi_wvalid || m_axi_wready)) mstate <= M_B;
        end
        M_B: if (m_axi_bvalid) begin
          if (!mmio_timed_out) cosim_ep_mmio_write_done(ctx, {6'b0, m_axi_bresp});
          mmio_timed_out <= 1'b0;
          mstate <= M_IDLE;
        end
        M_READ: if (m_axi_arready) begin
          m_axi_arvalid <= 1'b0;
          mstate <= M_R;
        end
        default: if (m_axi_rvalid) begin
          if (!mmio_timed_out) cosim_ep_mmio_read_done(ctx, {6'b0, m_axi_rresp}, m_axi_rdata);
          mmio_timed_out <= 1'b0;
          mstate <= M_IDLE;
        end
      endcase
    end
  end

  // Unused inputs (kept for the AXI port list).
  logic unused;
  assign unused = m_axi_rlast;
endmodule
