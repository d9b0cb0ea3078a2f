// template_top: the smallest complete device on cosim_pcie_ep: 32-bit registers in BAR0 (through
// the AXI-Lite adapter), one DMA engine and one MSI-X vector. Copy it and make it yours; the
// register map is in ../README.md.
//
// PCI identity 1ded:7e01, class ff0000 (unclassified), revision 1. BAR0: 4 KiB of registers.
// BAR2: 16 KiB, 64-bit, with the MSI-X table at 0 and the PBA at 0x2000: the host emulates both,
// so no RTL sits behind BAR2. The clock and reset come from the Verilator main (clk, rst_n).
module template_top #(
  parameter string ENDPOINT = ""  // "": a private ipc endpoint, printed on the ready line
) (
  input logic clk,
  input logic rst_n
);
  localparam int IDW = 4;
  logic user_resetn;  // low at start and after the guest resets the function: reset from it

  // MMIO: the shell's 64-bit AXI4 master, every BAR on one port, BAR index on a*user
  logic [63:0] awaddr, wdata, araddr, rdata;
  logic [7:0] awlen, wstrb, arlen;
  logic [2:0] awsize, awuser, arsize, aruser;
  logic [1:0] awburst, arburst, bresp, rresp;
  logic awvalid, awready, wlast, wvalid, wready, bvalid, bready, arvalid, arready, rlast, rvalid, rready;
  // ... as 32-bit AXI-Lite, a*user passed along
  logic [11:0] l_awaddr, l_araddr;
  logic [2:0] l_awprot, l_arprot, l_awuser, l_aruser;
  logic [31:0] l_wdata, l_rdata;
  logic [3:0] l_wstrb;
  logic [1:0] l_bresp, l_rresp;
  logic l_awvalid, l_awready, l_wvalid, l_wready, l_bvalid, l_bready;
  logic l_arvalid, l_arready, l_rvalid, l_rready;
  // DMA: the design's AXI4 master into guest memory
  logic [IDW-1:0] d_awid, d_bid, d_arid, d_rid;
  logic [63:0] d_awaddr, d_wdata, d_araddr, d_rdata;
  logic [7:0] d_awlen, d_wstrb, d_arlen;
  logic [2:0] d_awsize, d_arsize;
  logic [1:0] d_awburst, d_arburst, d_bresp, d_rresp;
  logic d_awvalid, d_awready, d_wlast, d_wvalid, d_wready, d_bvalid, d_bready;
  logic d_arvalid, d_arready, d_rlast, d_rvalid, d_rready;
  // MSI-X, and the shell's outputs of the interfaces this device does not use (NIC, UART)
  logic msix_valid, msix_ready;
  logic [63:0] nic_rx_tdata;
  logic [7:0] nic_rx_tkeep, uart_rx_data;
  logic nic_tx_tready, nic_rx_tlast, nic_rx_tvalid, uart_tx_ready, uart_rx_valid;
  // Registers <-> DMA engine
  logic dma_start, dma_done, dma_err;
  logic [63:0] dma_src, dma_dst;
  logic [9:0] dma_words;
  logic [31:0] dma_sum;
  logic dma_busy;

  cosim_pcie_ep #(
    .ENDPOINT(ENDPOINT),
    .VENDOR_ID(16'h1ded), .DEVICE_ID(16'h7e01), .CLASS_CODE(24'hff0000), .REVISION(8'h01),
    .BAR0_SIZE(4096),
    .BAR1_SIZE(0),
    .BAR2_SIZE(16384), .BAR2_64(1),
    .MSIX_VECTORS(1), .MSIX_TABLE_BAR(2), .MSIX_TABLE_OFFSET(0), .MSIX_PBA_BAR(2), .MSIX_PBA_OFFSET('h2000),
    .AXI_ID_W(IDW)
  ) u_ep (
    .axi_aclk(clk), .axi_aresetn(rst_n), .user_resetn(user_resetn),
    .m_axi_awaddr(awaddr), .m_axi_awlen(awlen), .m_axi_awsize(awsize), .m_axi_awburst(awburst),
    .m_axi_awuser(awuser), .m_axi_awvalid(awvalid), .m_axi_awready(awready),
    .m_axi_wdata(wdata), .m_axi_wstrb(wstrb), .m_axi_wlast(wlast), .m_axi_wvalid(wvalid), .m_axi_wready(wready),
    .m_axi_bresp(bresp), .m_axi_bvalid(bvalid), .m_axi_bready(bready),
    .m_axi_araddr(araddr), .m_axi_arlen(arlen), .m_axi_arsize(arsize), .m_axi_arburst(arburst),
    .m_axi_aruser(aruser), .m_axi_arvalid(arvalid), .m_axi_arready(arready),
    .m_axi_rdata(rdata), .m_axi_rresp(rresp), .m_axi_rlast(rlast), .m_axi_rvalid(rvalid), .m_axi_rready(rready),
    .s_axi_awid(d_awid), .s_axi_awaddr(d_awaddr), .s_axi_awlen(d_awlen), .s_axi_awsize(d_awsize),
    .s_axi_awburst(d_awburst), .s_axi_awvalid(d_awvalid), .s_axi_awready(d_awready),
    .s_axi_wdata(d_wdata), .s_axi_wstrb(d_wstrb), .s_axi_wlast(d_wlast), .s_axi_wvalid(d_wvalid),
    .s_axi_wready(d_wready),
    .s_axi_bid(d_bid), .s_axi_bresp(d_bresp), .s_axi_bvalid(d_bvalid), .s_axi_bready(d_bready),
    .s_axi_arid(d_arid), .s_axi_araddr(d_araddr), .s_axi_arlen(d_arlen), .s_axi_arsize(d_arsize),
    .s_axi_arburst(d_arburst), .s_axi_arvalid(d_arvalid), .s_axi_arready(d_arready),
    .s_axi_rid(d_rid), .s_axi_rdata(d_rdata), .s_axi_rresp(d_rresp), .s_axi_rlast(d_rlast),
    .s_axi_rvalid(d_rvalid), .s_axi_rready(d_rready),
    .msix_req_valid(msix_valid), .msix_req_ready(msix_ready), .msix_req_vector(11'd0),
    // No NIC and no UART: nothing to send (valid low), everything received is taken and dropped
    // (ready high), so the host never waits on this device for them.
    .s_axis_nic_tx_tdata('0), .s_axis_nic_tx_tkeep('0), .s_axis_nic_tx_tlast(1'b0),
    .s_axis_nic_tx_tvalid(1'b0), .s_axis_nic_tx_tready(nic_tx_tready),
    .m_axis_nic_rx_tdata(nic_rx_tdata), .m_axis_nic_rx_tkeep(nic_rx_tkeep), .m_axis_nic_rx_tlast(nic_rx_tlast),
    .m_axis_nic_rx_tvalid(nic_rx_tvalid), .m_axis_nic_rx_tready(1'b1),
    .uart_tx_valid(1'b0), .uart_tx_ready(uart_tx_ready), .uart_tx_data('0),
    .uart_rx_valid(uart_rx_valid), .uart_rx_ready(1'b1), .uart_rx_data(uart_rx_data)
  );

  // The registers are 32-bit AXI-Lite; the shell's MMIO port is 64-bit AXI4. The adapter splits
  // 8-byte accesses into two 32-bit ones and passes the BAR index along on m_axil_a*user.
  cosim_axil32 #(.ADDR_W(12)) u_axil (
    .clk(clk), .rst_n(user_resetn),
    .s_axi_awaddr(awaddr), .s_axi_awlen(awlen), .s_axi_awsize(awsize), .s_axi_awburst(awburst),
    .s_axi_awuser(awuser), .s_axi_awvalid(awvalid), .s_axi_awready(awready),
    .s_axi_wdata(wdata), .s_axi_wstrb(wstrb), .s_axi_wlast(wlast), .s_axi_wvalid(wvalid), .s_axi_wready(wready),
    .s_axi_bresp(bresp), .s_axi_bvalid(bvalid), .s_axi_bready(bready),
    .s_axi_araddr(araddr), .s_axi_arlen(arlen), .s_axi_arsize(arsize), .s_axi_arburst(arburst),
    .s_axi_aruser(aruser), .s_axi_arvalid(arvalid), .s_axi_arready(arready),
    .s_axi_rdata(rdata), .s_axi_rresp(rresp), .s_axi_rlast(rlast), .s_axi_rvalid(rvalid), .s_axi_rready(rready),
    .m_axil_awaddr(l_awaddr), .m_axil_awprot(l_awprot), .m_axil_awuser(l_awuser),
    .m_axil_awvalid(l_awvalid), .m_axil_awready(l_awready),
    .m_axil_wdata(l_wdata), .m_axil_wstrb(l_wstrb), .m_axil_wvalid(l_wvalid), .m_axil_wready(l_wready),
    .m_axil_bresp(l_bresp), .m_axil_bvalid(l_bvalid), .m_axil_bready(l_bready),
    .m_axil_araddr(l_araddr), .m_axil_arprot(l_arprot), .m_axil_aruser(l_aruser),
    .m_axil_arvalid(l_arvalid), .m_axil_arready(l_arready),
    .m_axil_rdata(l_rdata), .m_axil_rresp(l_rresp), .m_axil_rvalid(l_rvalid), .m_axil_rready(l_rready)
  );

  template_regs u_regs (
    .clk(clk), .rst_n(user_resetn),
    .s_axil_awaddr(l_awaddr), .s_axil_awuser(l_awuser), .s_axil_awvalid(l_awvalid), .s_axil_awready(l_awready),
    .s_axil_wdata(l_wdata), .s_axil_wstrb(l_wstrb), .s_axil_wvalid(l_wvalid), .s_axil_wready(l_wready),
    .s_axil_bresp(l_bresp), .s_axil_bvalid(l_bvalid), .s_axil_bready(l_bready),
    .s_axil_araddr(l_araddr), .s_axil_aruser(l_aruser), .s_axil_arvalid(l_arvalid), .s_axil_arready(l_arready),
    .s_axil_rdata(l_rdata), .s_axil_rresp(l_rresp), .s_axil_rvalid(l_rvalid), .s_axil_rready(l_rready),
    .dma_start(dma_start), .dma_src(dma_src), .dma_dst(dma_dst), .dma_words(dma_words),
    .dma_done(dma_done), .dma_err(dma_err), .dma_sum(dma_sum),
    .msix_valid(msix_valid), .msix_ready(msix_ready), .busy(dma_busy)
  );

  template_dma #(.ID_W(IDW)) u_dma (
    .clk(clk), .rst_n(user_resetn),
    .start(dma_start), .src(dma_src), .dst(dma_dst), .words(dma_words),
    .done(dma_done), .err(dma_err), .sum(dma_sum),
    .m_axi_awid(d_awid), .m_axi_awaddr(d_awaddr), .m_axi_awlen(d_awlen), .m_axi_awsize(d_awsize),
    .m_axi_awburst(d_awburst), .m_axi_awvalid(d_awvalid), .m_axi_awready(d_awready),
    .m_axi_wdata(d_wdata), .m_axi_wstrb(d_wstrb), .m_axi_wlast(d_wlast), .m_axi_wvalid(d_wvalid),
    .m_axi_wready(d_wready),
    .m_axi_bid(d_bid), .m_axi_bresp(d_bresp), .m_axi_bvalid(d_bvalid), .m_axi_bready(d_bready),
    .m_axi_arid(d_arid), .m_axi_araddr(d_araddr), .m_axi_arlen(d_arlen), .m_axi_arsize(d_arsize),
    .m_axi_arburst(d_arburst), .m_axi_arvalid(d_arvalid), .m_axi_arready(d_arready),
    .m_axi_rid(d_rid), .m_axi_rdata(d_rdata), .m_axi_rresp(d_rresp), .m_axi_rlast(d_rlast),
    .m_axi_rvalid(d_rvalid), .m_axi_rready(d_rready)
  );

  // Busy while a transfer runs or its interrupt waits to go out: only then does a clock without
  // the host change anything. When it is low and the shell has nothing pending, the simulation
  // stops its clock and sleeps until the host's next message instead of spinning a core
  // (docs/hdl-endpoint.md, "Idle sleep"). Without a cosim_busy the simulation never sleeps.
  cosim_busy u_busy (.clk(clk), .busy(dma_busy || msix_valid));

  // Shell outputs nobody reads: AXI-Lite has no AxPROT use here, and the NIC and UART receive
  // sides are dropped above. Verilator's -Wall does not report signals named unused*.
  logic unused;
  assign unused = ^{l_awprot, l_arprot, nic_tx_tready, nic_rx_tdata, nic_rx_tkeep, nic_rx_tlast, nic_rx_tvalid,
                    uart_tx_ready, uart_rx_valid, uart_rx_data};
endmodule
