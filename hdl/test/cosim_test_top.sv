// cosim_test_top: the bridge's test design: cosim_pcie_ep around cosim_test_dev.
// BAR0 4 KiB registers, BAR1 4 KiB RAM, BAR2 16 KiB 64-bit with the MSI-X table (0x0) and
// PBA (0x2000), 8 MSI-X vectors. Clock and reset come from the Verilator main (clk, rst_n).
module cosim_test_top #(
  parameter string ENDPOINT = ""  // "": a private ipc endpoint
) (
  input logic clk,
  input logic rst_n
);
  localparam int IDW = 4;
  logic user_resetn;
  logic [63:0] awaddr, wdata, araddr, rdata;
  logic [7:0] awlen, wstrb, arlen;
  logic [2:0] awsize, awuser, arsize, aruser;
  logic [1:0] awburst, arburst, bresp, rresp;
  logic awvalid, awready, wlast, wvalid, wready, bvalid, bready, arvalid, arready, rlast, rvalid, rready;
  logic [IDW-1:0] d_awid, d_bid, d_arid, d_rid;
  logic [63:0] d_awaddr, d_wdata, d_araddr, d_rdata;
  logic [7:0] d_awlen, d_wstrb, d_arlen;
  logic [2:0] d_awsize, d_arsize;
  logic [1:0] d_awburst, d_arburst, d_bresp, d_rresp;
  logic d_awvalid, d_awready, d_wlast, d_wvalid, d_wready, d_bvalid, d_bready;
  logic d_arvalid, d_arready, d_rlast, d_rvalid, d_rready;
  logic irq_valid, irq_ready;
  logic [10:0] irq_vector;
  logic [63:0] tx_tdata, rx_tdata;
  logic [7:0] tx_tkeep, rx_tkeep;
  logic tx_tlast, tx_tvalid, tx_tready, rx_tlast, rx_tvalid, rx_tready;
  logic u_tx_valid, u_tx_ready, u_rx_valid, u_rx_ready;
  logic [7:0] u_tx_data, u_rx_data;

  cosim_pcie_ep #(
    .ENDPOINT(ENDPOINT),
    .DEVICE_ID(16'h7e57),
    .BAR0_SIZE(4096), .BAR1_SIZE(4096), .BAR2_SIZE(16384), .BAR2_64(1),
    .BAR1_AXI_BASE(64'h1_0000), .BAR2_AXI_BASE(64'h2_0000),
    .MSIX_VECTORS(8), .MSIX_TABLE_BAR(2), .MSIX_TABLE_OFFSET(0), .MSIX_PBA_BAR(2), .MSIX_PBA_OFFSET('h2000),
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
    .msix_req_valid(irq_valid), .msix_req_ready(irq_ready), .msix_req_vector(irq_vector),
    .s_axis_nic_tx_tdata(tx_tdata), .s_axis_nic_tx_tkeep(tx_tkeep), .s_axis_nic_tx_tlast(tx_tlast),
    .s_axis_nic_tx_tvalid(tx_tvalid), .s_axis_nic_tx_tready(tx_tready),
    .m_axis_nic_rx_tdata(rx_tdata), .m_axis_nic_rx_tkeep(rx_tkeep), .m_axis_nic_rx_tlast(rx_tlast),
    .m_axis_nic_rx_tvalid(rx_tvalid), .m_axis_nic_rx_tready(rx_tready),
    .uart_tx_valid(u_tx_valid), .uart_tx_ready(u_tx_ready), .uart_tx_data(u_tx_data),
    .uart_rx_valid(u_rx_valid), .uart_rx_ready(u_rx_ready), .uart_rx_data(u_rx_data)
  );

  cosim_test_dev #(.AXI_ID_W(IDW)) u_dev (
    .clk(clk), .rst_n(user_resetn),
    .r_awaddr(awaddr), .r_awuser(awuser), .r_awvalid(awvalid), .r_awready(awready),
    .r_wdata(wdata), .r_wstrb(wstrb), .r_wvalid(wvalid), .r_wready(wready),
    .r_bresp(bresp), .r_bvalid(bvalid), .r_bready(bready),
    .r_araddr(araddr), .r_aruser(aruser), .r_arvalid(arvalid), .r_arready(arready),
    .r_rdata(rdata), .r_rresp(rresp), .r_rlast(rlast), .r_rvalid(rvalid), .r_rready(rready),
    .d_awid(d_awid), .d_awaddr(d_awaddr), .d_awlen(d_awlen), .d_awsize(d_awsize), .d_awburst(d_awburst),
    .d_awvalid(d_awvalid), .d_awready(d_awready),
    .d_wdata(d_wdata), .d_wstrb(d_wstrb), .d_wlast(d_wlast), .d_wvalid(d_wvalid), .d_wready(d_wready),
    .d_bid(d_bid), .d_bresp(d_bresp), .d_bvalid(d_bvalid), .d_bready(d_bready),
    .d_arid(d_arid), .d_araddr(d_araddr), .d_arlen(d_arlen), .d_arsize(d_arsize), .d_arburst(d_arburst),
    .d_arvalid(d_arvalid), .d_arready(d_arready),
    .d_rid(d_rid), .d_rdata(d_rdata), .d_rresp(d_rresp), .d_rlast(d_rlast), .d_rvalid(d_rvalid),
    .d_rready(d_rready),
    .irq_valid(irq_valid), .irq_ready(irq_ready), .irq_vector(irq_vector),
    .tx_tdata(tx_tdata), .tx_tkeep(tx_tkeep), .tx_tlast(tx_tlast), .tx_tvalid(tx_tvalid), .tx_tready(tx_tready),
    .rx_tdata(rx_tdata), .rx_tkeep(rx_tkeep), .rx_tlast(rx_tlast), .rx_tvalid(rx_tvalid), .rx_tready(rx_tready),
    .u_tx_valid(u_tx_valid), .u_tx_ready(u_tx_ready), .u_tx_data(u_tx_data),
    .u_rx_valid(u_rx_valid), .u_rx_ready(u_rx_ready), .u_rx_data(u_rx_data)
  );

  logic unused;
  assign unused = ^{awlen, awsize, awburst, wlast, arlen, arsize, arburst};
endmodule
