// GEMM accelerator: register block (BAR0), GEMM engine with DMA and MSI-X, UART, Ethernet echo.
// The register map, data types and error codes are in docs/register-map.md.
module gemm_accel #(
    parameter int ROWS      = 4,     // MAC array rows
    parameter int COLS      = 4,     // MAC array columns
    parameter int NB        = 64,    // columns of B held on chip (multiple of COLS)
    parameter int AM        = 32,    // rows of A held on chip (multiple of ROWS)
    parameter int MAX_DIM   = 1024,
    parameter int AXI_ID_W  = 4,
    parameter int RD_OUT    = 16,    // outstanding DMA read bursts (<= 2**AXI_ID_W)
    parameter int NIC_BEATS = 1152   // largest echoed frame in 8-byte beats (9216 bytes)
) (
    input  logic                clk,
    input  logic                rst_n,

    // BAR0 registers: AXI4 slave
    input  logic [63:0]         s_axi_awaddr,
    input  logic [7:0]          s_axi_awlen,
    input  logic [2:0]          s_axi_awsize,
    input  logic [1:0]          s_axi_awburst,
    input  logic [2:0]          s_axi_awuser,
    input  logic                s_axi_awvalid,
    output logic                s_axi_awready,
    input  logic [63:0]         s_axi_wdata,
    input  logic [7:0]          s_axi_wstrb,
    input  logic                s_axi_wlast,
    input  logic                s_axi_wvalid,
    output logic                s_axi_wready,
    output logic [1:0]          s_axi_bresp,
    output logic                s_axi_bvalid,
    input  logic                s_axi_bready,
    input  logic [63:0]         s_axi_araddr,
    input  logic [7:0]          s_axi_arlen,
    input  logic [2:0]          s_axi_arsize,
    input  logic [1:0]          s_axi_arburst,
    input  logic [2:0]          s_axi_aruser,
    input  logic                s_axi_arvalid,
    output logic                s_axi_arready,
    output logic [63:0]         s_axi_rdata,
    output logic [1:0]          s_axi_rresp,
    output logic                s_axi_rlast,
    output logic                s_axi_rvalid,
    input  logic                s_axi_rready,

    // DMA: AXI4 master
    output logic [AXI_ID_W-1:0] m_axi_awid,
    output logic [63:0]         m_axi_awaddr,
    output logic [7:0]          m_axi_awlen,
    output logic [2:0]          m_axi_awsize,
    output logic [1:0]          m_axi_awburst,
    output logic                m_axi_awvalid,
    input  logic                m_axi_awready,
    output logic [63:0]         m_axi_wdata,
    output logic [7:0]          m_axi_wstrb,
    output logic                m_axi_wlast,
    output logic                m_axi_wvalid,
    input  logic                m_axi_wready,
    input  logic [AXI_ID_W-1:0] m_axi_bid,
    input  logic [1:0]          m_axi_bresp,
    input  logic                m_axi_bvalid,
    output logic                m_axi_bready,
    output logic [AXI_ID_W-1:0] m_axi_arid,
    output logic [63:0]         m_axi_araddr,
    output logic [7:0]          m_axi_arlen,
    output logic [2:0]          m_axi_arsize,
    output logic [1:0]          m_axi_arburst,
    output logic                m_axi_arvalid,
    input  logic                m_axi_arready,
    input  logic [AXI_ID_W-1:0] m_axi_rid,
    input  logic [63:0]         m_axi_rdata,
    input  logic [1:0]          m_axi_rresp,
    input  logic                m_axi_rlast,
    input  logic                m_axi_rvalid,
    output logic                m_axi_rready,

    // MSI-X request
    output logic                msix_req_valid,
    input  logic                msix_req_ready,
    output logic [10:0]         msix_req_vector,

    // Ethernet: frames out (to the host) and frames in
    output logic [63:0]         m_axis_tx_tdata,
    output logic [7:0]          m_axis_tx_tkeep,
    output logic                m_axis_tx_tlast,
    output logic                m_axis_tx_tvalid,
    input  logic                m_axis_tx_tready,
    input  logic [63:0]         s_axis_rx_tdata,
    input  logic [7:0]          s_axis_rx_tkeep,
    input  logic                s_axis_rx_tlast,
    input  logic                s_axis_rx_tvalid,
    output logic                s_axis_rx_tready,

    // UART bytes
    output logic                uart_tx_valid,
    input  logic                uart_tx_ready,
    output logic [7:0]          uart_tx_data,
    input  logic                uart_rx_valid,
    output logic                uart_rx_ready,
    input  logic [7:0]          uart_rx_data
);
    logic        start, irq_en, clear;
    logic [31:0] cfg_m, cfg_n, cfg_k, cfg_lda, cfg_ldb, cfg_ldc;
    logic [63:0] cfg_a, cfg_b, cfg_c;
    logic [10:0] cfg_vector;
    logic        busy, done, error;
    logic [7:0]  error_code;
    logic [63:0] job_cycles, job_dma_wait;
    logic [31:0] jobs_done, nic_rx_frames, nic_tx_frames, uart_rx_bytes;

    gemm_regs #(.ROWS(ROWS), .COLS(COLS), .MAX_DIM(MAX_DIM)) u_regs (
        .clk, .rst_n,
        .s_axi_awaddr, .s_axi_awlen, .s_axi_awsize, .s_axi_awburst, .s_axi_awuser,
        .s_axi_awvalid, .s_axi_awready, .s_axi_wdata, .s_axi_wstrb, .s_axi_wlast, .s_axi_wvalid,
        .s_axi_wready, .s_axi_bresp, .s_axi_bvalid, .s_axi_bready, .s_axi_araddr, .s_axi_arlen,
        .s_axi_arsize, .s_axi_arburst, .s_axi_aruser, .s_axi_arvalid, .s_axi_arready,
        .s_axi_rdata, .s_axi_rresp, .s_axi_rlast, .s_axi_rvalid, .s_axi_rready,
        .start, .irq_en, .clear, .cfg_m, .cfg_n, .cfg_k, .cfg_lda, .cfg_ldb, .cfg_ldc,
        .cfg_a, .cfg_b, .cfg_c, .cfg_vector,
        .busy, .done, .error, .error_code, .job_cycles, .job_dma_wait, .jobs_done,
        .nic_rx_frames, .nic_tx_frames, .uart_rx_bytes
    );

    gemm_engine #(
        .ROWS(ROWS), .COLS(COLS), .NB(NB), .AM(AM), .MAX_DIM(MAX_DIM), .ID_W(AXI_ID_W), .RD_OUT(RD_OUT)
    ) u_engine (
        .clk, .rst_n,
        .start, .irq_en, .clear, .cfg_m, .cfg_n, .cfg_k, .cfg_lda, .cfg_ldb, .cfg_ldc,
        .cfg_a, .cfg_b, .cfg_c, .cfg_vector,
        .busy, .done, .error, .error_code, .job_cycles, .job_dma_wait, .jobs_done,
        .msix_req_valid, .msix_req_ready, .msix_req_vector,
        .m_axi_awid, .m_axi_awaddr, .m_axi_awlen, .m_axi_awsize, .m_axi_awburst, .m_axi_awvalid,
        .m_axi_awready, .m_axi_wdata, .m_axi_wstrb, .m_axi_wlast, .m_axi_wvalid, .m_axi_wready,
        .m_axi_bid, .m_axi_bresp, .m_axi_bvalid, .m_axi_bready,
        .m_axi_arid, .m_axi_araddr, .m_axi_arlen, .m_axi_arsize, .m_axi_arburst, .m_axi_arvalid,
        .m_axi_arready, .m_axi_rid, .m_axi_rdata, .m_axi_rresp, .m_axi_rlast, .m_axi_rvalid,
        .m_axi_rready
    );

    gemm_uart u_uart (
        .clk, .rst_n,
        .uart_tx_valid, .uart_tx_ready, .uart_tx_data,
        .uart_rx_valid, .uart_rx_ready, .uart_rx_data,
        .rx_bytes(uart_rx_bytes)
    );

    gemm_nic_echo #(.MAX_BEATS(NIC_BEATS)) u_nic (
        .clk, .rst_n,
        .rx_tdata(s_axis_rx_tdata), .rx_tkeep(s_axis_rx_tkeep), .rx_tlast(s_axis_rx_tlast),
        .rx_tvalid(s_axis_rx_tvalid), .rx_tready(s_axis_rx_tready),
        .tx_tdata(m_axis_tx_tdata), .tx_tkeep(m_axis_tx_tkeep), .tx_tlast(m_axis_tx_tlast),
        .tx_tvalid(m_axis_tx_tvalid), .tx_tready(m_axis_tx_tready),
        .rx_frames(nic_rx_frames), .tx_frames(nic_tx_frames)
    );
endmodule
