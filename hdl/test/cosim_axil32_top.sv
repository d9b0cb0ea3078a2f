// cosim_axil32_top: the test of the 32-bit AXI-Lite adapter (host-model/tests/axil32.rs):
// cosim_pcie_ep -> cosim_axil32 -> cosim_axil32_regs (random back-pressure on every channel).
// BAR0 and BAR1 4 KiB, both through the adapter (the slave keeps a bank per BAR, chosen by the
// adapter's a*user sideband); BAR2 16 KiB 64-bit with the MSI-X table and PBA (host-emulated).
// No DMA, interrupts, NIC or UART: their inputs are tied off.
module cosim_axil32_top #(
  parameter string ENDPOINT = ""  // "": a private ipc endpoint
) (
  input logic clk,
  input logic rst_n
);
  logic user_resetn;
  // 64-bit MMIO from the shell
  logic [63:0] awaddr, wdata, araddr, rdata;
  logic [7:0] awlen, wstrb, arlen;
  logic [2:0] awsize, awuser, arsize, aruser;
  logic [1:0] awburst, arburst, bresp, rresp;
  logic awvalid, awready, wlast, wvalid, wready, bvalid, bready, arvalid, arready, rlast, rvalid, rready;
  // 32-bit AXI-Lite to the register slave
  logic [11:0] l_awaddr, l_araddr;
  logic [2:0] l_awprot, l_arprot, l_awuser, l_aruser;
  logic [31:0] l_wdata, l_rdata;
  logic [3:0] l_wstrb;
  logic [1:0] l_bresp, l_rresp;
  logic l_awvalid, l_awready, l_wvalid, l_wready, l_bvalid, l_bready;
  logic l_arvalid, l_arready, l_rvalid, l_rready;
  // Shell outputs of the unused interfaces
  logic d_awready, d_wready, d_bvalid, d_arready, d_rlast, d_rvalid, irq_ready;
  logic [3:0] d_bid, d_rid;
  logic [1:0] d_bresp, d_rresp;
  logic [63:0] d_rdata, rx_tdata;
  logic [7:0] rx_tkeep, u_rx_data;
  logic tx_tready, rx_tlast, rx_tvalid, u_tx_ready, u_rx_valid;

  cosim_pcie_ep #(
    .ENDPOINT(ENDPOINT),
    .DEVICE_ID(16'h7e32),
    .BAR0_SIZE(4096), .BAR1_SIZE(4096), .BAR2_SIZE(16384), .BAR2_64(1),
    .MSIX_VECTORS(1)
  ) u_ep (
    .axi_aclk(clk), .axi_aresetn(rst_n), .user_resetn(user_resetn),
    .m_axi_awaddr(awaddr), .m_axi_awlen(awlen), .m_axi_awsize(awsize), .m_axi_awburst(awburst),
    .m_axi_awuser(awuser), .m_axi_awvalid(awvalid), .m_axi_awready(awready),
    .m_axi_wdata(wdata), .m_axi_wstrb(wstrb), .m_axi_wlast(wlast), .m_axi_wvalid(wvalid), .m_axi_wready(wready),
    .m_axi_bresp(bresp), .m_axi_bvalid(bvalid), .m_axi_bready(bready),
    .m_axi_araddr(araddr), .m_axi_arlen(arlen), .m_axi_arsize(arsize), .m_axi_arburst(arburst),
    .m_axi_aruser(aruser), .m_axi_arvalid(arvalid), .m_axi_arready(arready),
    .m_axi_rdata(rdata), .m_axi_rresp(rresp), .m_axi_rlast(rlast), .m_axi_rvalid(rvalid), .m_axi_rready(rready),
    .s_axi_awid('0), .s_axi_awaddr('0), .s_axi_awlen('0), .s_axi_awsize('0), .s_axi_awburst('0),
    .s_axi_awvalid(1'b0), .s_axi_awready(d_awready),
    .s_axi_wdata('0), .s_axi_wstrb('0), .s_axi_wlast(1'b0), .s_axi_wvalid(1'b0), .s_axi_wready(d_wready),
    .s_axi_bid(d_bid), .s_axi_bresp(d_bresp), .s_axi_bvalid(d_bvalid), .s_axi_bready(1'b1),
    .s_axi_arid('0), .s_axi_araddr('0), .s_axi_arlen('0), .s_axi_arsize('0), .s_axi_arburst('0),
    .s_axi_arvalid(1'b0), .s_axi_arready(d_arready),
    .s_axi_rid(d_rid), .s_axi_rdata(d_rdata), .s_axi_rresp(d_rresp), .s_axi_rlast(d_rlast),
    .s_axi_rvalid(d_rvalid), .s_axi_rready(1'b1),
    .msix_req_valid(1'b0), .msix_req_ready(irq_ready), .msix_req_vector('0),
    .s_axis_nic_tx_tdata('0), .s_axis_nic_tx_tkeep('0), .s_axis_nic_tx_tlast(1'b0),
    .s_axis_nic_tx_tvalid(1'b0), .s_axis_nic_tx_tready(tx_tready),
    .m_axis_nic_rx_tdata(rx_tdata), .m_axis_nic_rx_tkeep(rx_tkeep), .m_axis_nic_rx_tlast(rx_tlast),
    .m_axis_nic_rx_tvalid(rx_tvalid), .m_axis_nic_rx_tready(1'b1),
    .uart_tx_valid(1'b0), .uart_tx_ready(u_tx_ready), .uart_tx_data('0),
    .uart_rx_valid(u_rx_valid), .uart_rx_ready(1'b1), .uart_rx_data(u_rx_data)
  );

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

  cosim_axil32_regs u_regs (
    .clk(clk), .rst_n(user_resetn),
    .awaddr(l_awaddr), .awuser(l_awuser), .awvalid(l_awvalid), .awready(l_awready),
    .wdata(l_wdata), .wstrb(l_wstrb), .wvalid(l_wvalid), .wready(l_wready),
    .bresp(l_bresp), .bvalid(l_bvalid), .bready(l_bready),
    .araddr(l_araddr), .aruser(l_aruser), .arvalid(l_arvalid), .arready(l_arready),
    .rdata(l_rdata), .rresp(l_rresp), .rvalid(l_rvalid), .rready(l_rready)
  );

  logic unused;
  assign unused = ^{l_awprot, l_arprot, d_awready, d_wready, d_bid, d_bresp, d_bvalid, d_arready, d_rid,
                    d_rdata, d_rresp, d_rlast, d_rvalid, irq_ready, tx_tready, rx_tdata, rx_tkeep, rx_tlast,
                    rx_tvalid, u_tx_ready, u_rx_valid, u_rx_data};
endmodule
