// gemm_top: the simulated top level. The endpoint shell cosim_pcie_ep (hdl/ep) bridges the PCIe
// side to QEMU or the host model; gemm_accel is the user design behind it. Clock and reset come
// from the Verilator testbench (verilator-tb); the design runs on the shell's user_resetn, which
// also pulses on a host Reset.
module gemm_top #(
    parameter string ENDPOINT = "",   // "": a private ipc endpoint; +cosim_endpoint=... overrides
    parameter int    ROWS     = 4,
    parameter int    COLS     = 4,
    parameter int    AXI_ID_W = 5,    // 16 read IDs for each of the two DMA read engines
    parameter int    RD_OUT   = 32    // DMA read bursts in flight (the shell's MAX_DMA_READS)
) (
    input logic axi_aclk,
    input logic axi_aresetn
);
    logic user_resetn;

    // MMIO: shell (AXI4 master) -> register block
    logic [63:0] mmio_awaddr, mmio_wdata, mmio_araddr, mmio_rdata;
    logic [7:0]  mmio_awlen, mmio_wstrb, mmio_arlen;
    logic [2:0]  mmio_awsize, mmio_awuser, mmio_arsize, mmio_aruser;
    logic [1:0]  mmio_awburst, mmio_bresp, mmio_arburst, mmio_rresp;
    logic        mmio_awvalid, mmio_awready, mmio_wlast, mmio_wvalid, mmio_wready;
    logic        mmio_bvalid, mmio_bready, mmio_arvalid, mmio_arready;
    logic        mmio_rlast, mmio_rvalid, mmio_rready;

    // DMA: engine (AXI4 master) -> shell
    logic [AXI_ID_W-1:0] dma_awid, dma_bid, dma_arid, dma_rid;
    logic [63:0] dma_awaddr, dma_wdata, dma_araddr, dma_rdata;
    logic [7:0]  dma_awlen, dma_wstrb, dma_arlen;
    logic [2:0]  dma_awsize, dma_arsize;
    logic [1:0]  dma_awburst, dma_bresp, dma_arburst, dma_rresp;
    logic        dma_awvalid, dma_awready, dma_wlast, dma_wvalid, dma_wready;
    logic        dma_bvalid, dma_bready, dma_arvalid, dma_arready;
    logic        dma_rlast, dma_rvalid, dma_rready;

    logic        msix_req_valid, msix_req_ready;
    logic [10:0] msix_req_vector;

    logic [63:0] nic_tx_tdata, nic_rx_tdata;
    logic [7:0]  nic_tx_tkeep, nic_rx_tkeep;
    logic        nic_tx_tlast, nic_tx_tvalid, nic_tx_tready;
    logic        nic_rx_tlast, nic_rx_tvalid, nic_rx_tready;

    logic        uart_tx_valid, uart_tx_ready, uart_rx_valid, uart_rx_ready;
    logic [7:0]  uart_tx_data, uart_rx_data;

    // PCI identity and BARs: docs/register-map.md, defined in gemm-abi/src/lib.rs (`pci`; checked
    // by gemm-abi/tests/rtl.rs).
    cosim_pcie_ep #(
        .ENDPOINT          (ENDPOINT),
        .VENDOR_ID         (16'h1ded),
        .DEVICE_ID         (16'hacc1),
        .SUBSYS_VENDOR_ID  (16'h1ded),
        .SUBSYS_ID         (16'h0001),
        .CLASS_CODE        (24'h120000),
        .REVISION          (8'h01),
        .BAR0_SIZE         (4096),
        .BAR0_64           (1'b0),
        .BAR2_SIZE         (16384),
        .BAR2_64           (1'b1),
        .MSIX_VECTORS      (4),
        .MSIX_TABLE_BAR    (2),
        .MSIX_TABLE_OFFSET (0),
        .MSIX_PBA_BAR      (2),
        .MSIX_PBA_OFFSET   ('h2000),
        .AXI_ID_W          (AXI_ID_W),
        .MAX_DMA_READS     (RD_OUT)
    ) u_ep (
        .axi_aclk, .axi_aresetn, .user_resetn,
        .m_axi_awaddr (mmio_awaddr),  .m_axi_awlen (mmio_awlen),   .m_axi_awsize (mmio_awsize),
        .m_axi_awburst(mmio_awburst), .m_axi_awuser(mmio_awuser),  .m_axi_awvalid(mmio_awvalid),
        .m_axi_awready(mmio_awready), .m_axi_wdata (mmio_wdata),   .m_axi_wstrb  (mmio_wstrb),
        .m_axi_wlast  (mmio_wlast),   .m_axi_wvalid(mmio_wvalid),  .m_axi_wready (mmio_wready),
        .m_axi_bresp  (mmio_bresp),   .m_axi_bvalid(mmio_bvalid),  .m_axi_bready (mmio_bready),
        .m_axi_araddr (mmio_araddr),  .m_axi_arlen (mmio_arlen),   .m_axi_arsize (mmio_arsize),
        .m_axi_arburst(mmio_arburst), .m_axi_aruser(mmio_aruser),  .m_axi_arvalid(mmio_arvalid),
        .m_axi_arready(mmio_arready), .m_axi_rdata (mmio_rdata),   .m_axi_rresp  (mmio_rresp),
        .m_axi_rlast  (mmio_rlast),   .m_axi_rvalid(mmio_rvalid),  .m_axi_rready (mmio_rready),
        .s_axi_awid   (dma_awid),     .s_axi_awaddr(dma_awaddr),   .s_axi_awlen  (dma_awlen),
        .s_axi_awsize (dma_awsize),   .s_axi_awburst(dma_awburst), .s_axi_awvalid(dma_awvalid),
        .s_axi_awready(dma_awready),  .s_axi_wdata (dma_wdata),    .s_axi_wstrb  (dma_wstrb),
        .s_axi_wlast  (dma_wlast),    .s_axi_wvalid(dma_wvalid),   .s_axi_wready (dma_wready),
        .s_axi_bid    (dma_bid),      .s_axi_bresp (dma_bresp),    .s_axi_bvalid (dma_bvalid),
        .s_axi_bready (dma_bready),   .s_axi_arid  (dma_arid),     .s_axi_araddr (dma_araddr),
        .s_axi_arlen  (dma_arlen),    .s_axi_arsize(dma_arsize),   .s_axi_arburst(dma_arburst),
        .s_axi_arvalid(dma_arvalid),  .s_axi_arready(dma_arready), .s_axi_rid    (dma_rid),
        .s_axi_rdata  (dma_rdata),    .s_axi_rresp (dma_rresp),    .s_axi_rlast  (dma_rlast),
        .s_axi_rvalid (dma_rvalid),   .s_axi_rready(dma_rready),
        .msix_req_valid, .msix_req_ready, .msix_req_vector,
        .s_axis_nic_tx_tdata (nic_tx_tdata),  .s_axis_nic_tx_tkeep (nic_tx_tkeep),
        .s_axis_nic_tx_tlast (nic_tx_tlast),  .s_axis_nic_tx_tvalid(nic_tx_tvalid),
        .s_axis_nic_tx_tready(nic_tx_tready),
        .m_axis_nic_rx_tdata (nic_rx_tdata),  .m_axis_nic_rx_tkeep (nic_rx_tkeep),
        .m_axis_nic_rx_tlast (nic_rx_tlast),  .m_axis_nic_rx_tvalid(nic_rx_tvalid),
        .m_axis_nic_rx_tready(nic_rx_tready),
        .uart_tx_valid, .uart_tx_ready, .uart_tx_data,
        .uart_rx_valid, .uart_rx_ready, .uart_rx_data
    );

    gemm_accel #(.ROWS(ROWS), .COLS(COLS), .AXI_ID_W(AXI_ID_W), .RD_OUT(RD_OUT)) u_accel (
        .clk(axi_aclk), .rst_n(user_resetn),
        .s_axi_awaddr (mmio_awaddr),  .s_axi_awlen (mmio_awlen),   .s_axi_awsize (mmio_awsize),
        .s_axi_awburst(mmio_awburst), .s_axi_awuser(mmio_awuser),  .s_axi_awvalid(mmio_awvalid),
        .s_axi_awready(mmio_awready), .s_axi_wdata (mmio_wdata),   .s_axi_wstrb  (mmio_wstrb),
        .s_axi_wlast  (mmio_wlast),   .s_axi_wvalid(mmio_wvalid),  .s_axi_wready (mmio_wready),
        .s_axi_bresp  (mmio_bresp),   .s_axi_bvalid(mmio_bvalid),  .s_axi_bready (mmio_bready),
        .s_axi_araddr (mmio_araddr),  .s_axi_arlen (mmio_arlen),   .s_axi_arsize (mmio_arsize),
        .s_axi_arburst(mmio_arburst), .s_axi_aruser(mmio_aruser),  .s_axi_arvalid(mmio_arvalid),
        .s_axi_arready(mmio_arready), .s_axi_rdata (mmio_rdata),   .s_axi_rresp  (mmio_rresp),
        .s_axi_rlast  (mmio_rlast),   .s_axi_rvalid(mmio_rvalid),  .s_axi_rready (mmio_rready),
        .m_axi_awid   (dma_awid),     .m_axi_awaddr(dma_awaddr),   .m_axi_awlen  (dma_awlen),
        .m_axi_awsize (dma_awsize),   .m_axi_awburst(dma_awburst), .m_axi_awvalid(dma_awvalid),
        .m_axi_awready(dma_awready),  .m_axi_wdata (dma_wdata),    .m_axi_wstrb  (dma_wstrb),
        .m_axi_wlast  (dma_wlast),    .m_axi_wvalid(dma_wvalid),   .m_axi_wready (dma_wready),
        .m_axi_bid    (dma_bid),      .m_axi_bresp (dma_bresp),    .m_axi_bvalid (dma_bvalid),
        .m_axi_bready (dma_bready),   .m_axi_arid  (dma_arid),     .m_axi_araddr (dma_araddr),
        .m_axi_arlen  (dma_arlen),    .m_axi_arsize(dma_arsize),   .m_axi_arburst(dma_arburst),
        .m_axi_arvalid(dma_arvalid),  .m_axi_arready(dma_arready), .m_axi_rid    (dma_rid),
        .m_axi_rdata  (dma_rdata),    .m_axi_rresp (dma_rresp),    .m_axi_rlast  (dma_rlast),
        .m_axi_rvalid (dma_rvalid),   .m_axi_rready(dma_rready),
        .msix_req_valid, .msix_req_ready, .msix_req_vector,
        .m_axis_tx_tdata (nic_tx_tdata),  .m_axis_tx_tkeep (nic_tx_tkeep),
        .m_axis_tx_tlast (nic_tx_tlast),  .m_axis_tx_tvalid(nic_tx_tvalid),
        .m_axis_tx_tready(nic_tx_tready),
        .s_axis_rx_tdata (nic_rx_tdata),  .s_axis_rx_tkeep (nic_rx_tkeep),
        .s_axis_rx_tlast (nic_rx_tlast),  .s_axis_rx_tvalid(nic_rx_tvalid),
        .s_axis_rx_tready(nic_rx_tready),
        .uart_tx_valid, .uart_tx_ready, .uart_tx_data,
        .uart_rx_valid, .uart_rx_ready, .uart_rx_data
    );

    // Idle sleep (docs/hdl-endpoint.md): busy while a job runs (the engine's state is not idle)
    // or an interrupt, a frame or a UART byte is on its way out; otherwise the simulation may
    // stop its clock and sleep until the host sends something.
    cosim_busy u_busy (
        .clk (axi_aclk),
        .busy(!user_resetn || u_accel.busy || msix_req_valid || nic_tx_tvalid || uart_tx_valid)
    );
endmodule
