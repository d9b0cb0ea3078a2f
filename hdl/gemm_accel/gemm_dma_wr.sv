// DMA write engine (AXI4 master, AW/W/B channels) for int32 result rows.
//
// Writes NROWS rows of NCOLS 32-bit elements, row r at DST_ADDR + r * DST_STRIDE (DST_ADDR and
// DST_STRIDE 4-byte aligned), taking element (r, c) from the element read port (combinational,
// two elements per beat). Each row is split into INCR bursts of 8-byte beats (at most 256 beats,
// never crossing a 4 KiB boundary); a row starting at an address that is 4 mod 8 begins with a
// half-strobed beat. Responses are counted; a non-OKAY response is reported with DONE.
module gemm_dma_wr #(
    parameter int ID_W  = 4,
    parameter int ROW_W = 3,     // width of a row index
    parameter int COL_W = 7      // width of a column index (NCOLS <= 2**COL_W - 1)
) (
    input  logic             clk,
    input  logic             rst_n,

    input  logic             start,       // ignored while busy
    input  logic [63:0]      dst_addr,
    input  logic [63:0]      dst_stride,  // bytes
    input  logic [ROW_W:0]   nrows,       // > 0
    input  logic [COL_W-1:0] ncols,       // > 0
    output logic             busy,
    output logic             done,        // one-cycle pulse when all responses are in
    output logic             err,         // with done: some response was not OKAY

    output logic [ROW_W-1:0] rd_row,      // element read port
    output logic [COL_W-1:0] rd_col0,     // element of lanes [31:0]
    output logic [COL_W-1:0] rd_col1,     // element of lanes [63:32]
    input  logic [31:0]      rd_data0,
    input  logic [31:0]      rd_data1,

    output logic [ID_W-1:0]  m_axi_awid,
    output logic [63:0]      m_axi_awaddr,
    output logic [7:0]       m_axi_awlen,
    output logic [2:0]       m_axi_awsize,
    output logic [1:0]       m_axi_awburst,
    output logic             m_axi_awvalid,
    input  logic             m_axi_awready,
    output logic [63:0]      m_axi_wdata,
    output logic [7:0]       m_axi_wstrb,
    output logic             m_axi_wlast,
    output logic             m_axi_wvalid,
    input  logic             m_axi_wready,
    input  logic [ID_W-1:0]  m_axi_bid,
    input  logic [1:0]       m_axi_bresp,
    input  logic             m_axi_bvalid,
    output logic             m_axi_bready
);
    typedef enum logic [1:0] {S_IDLE, S_ADDR, S_DATA, S_RESP} state_t;
    state_t state;

    logic [63:0]      row_addr, stride_q;
    logic [ROW_W:0]   nrows_q, row;
    logic [COL_W-1:0] ncols_q, col;       // first element of the current burst
    logic [15:0]      pending;            // bursts without a response yet
    logic             err_q;

    // Current burst, latched on the AW handshake.
    logic             b_off;              // 1: the burst starts on lanes [63:32]
    logic [9:0]       b_nel;              // elements in the burst
    logic [7:0]       b_last, beat;

    // Next burst from (row_addr, col).
    logic [63:0] sa;
    logic [10:0] rem, to_4k, to_max, lim, nel;
    logic [10:0] nbeats;
    always_comb begin
        sa     = '0;
        rem    = '0;
        to_4k  = '0;
        to_max = '0;
        lim    = '0;
        nel    = '0;
        nbeats = '0;
        if (state == S_ADDR) begin      // evaluated only when used (cheaper to simulate)
            sa     = row_addr + {{(62-COL_W){1'b0}}, col, 2'b00};
            rem    = 11'(ncols_q) - 11'(col);
            to_4k  = 11'((13'd4096 - {1'b0, sa[11:0]}) >> 2);
            to_max = sa[2] ? 11'd511 : 11'd512;
            lim    = (to_4k < to_max) ? to_4k : to_max;
            nel    = (rem < lim) ? rem : lim;
            nbeats = (11'(sa[2]) + nel + 11'd1) >> 1;
        end
    end

    assign m_axi_awid    = '0;
    assign m_axi_awaddr  = {sa[63:3], 3'b000};
    assign m_axi_awlen   = 8'(nbeats - 11'd1);
    assign m_axi_awsize  = 3'd3;
    assign m_axi_awburst = 2'b01;
    assign m_axi_awvalid = (state == S_ADDR);

    // Beat contents: element e0 on the low half, e1 on the high half.
    logic [9:0] t0, t1;
    logic       v0, v1;
    always_comb begin
        t0 = '0;
        t1 = '0;
        v0 = 1'b0;
        v1 = 1'b0;
        if (state == S_DATA) begin
            t0 = {1'b0, beat, 1'b0} - 10'(b_off);
            t1 = {1'b0, beat, 1'b1} - 10'(b_off);
            v0 = !(beat == 8'd0 && b_off) && (t0 < b_nel);
            v1 = t1 < b_nel;
        end
    end
    assign rd_row        = ROW_W'(row);
    assign rd_col0       = v0 ? col + COL_W'(t0) : col;
    assign rd_col1       = v1 ? col + COL_W'(t1) : col;
    assign m_axi_wdata   = {rd_data1, rd_data0};
    assign m_axi_wstrb   = {{4{v1}}, {4{v0}}};
    assign m_axi_wlast   = (beat == b_last);
    assign m_axi_wvalid  = (state == S_DATA);
    assign m_axi_bready  = 1'b1;

    assign busy = (state != S_IDLE);

    logic aw_hs, b_hs;
    assign aw_hs = m_axi_awvalid && m_axi_awready;
    assign b_hs  = m_axi_bvalid && m_axi_bready;

    always_ff @(posedge clk) begin
        done <= 1'b0;
        if (!rst_n) begin
            state   <= S_IDLE;
            pending <= '0;
            err_q   <= 1'b0;
            err     <= 1'b0;
        end else begin
            pending <= pending + 16'(aw_hs) - 16'(b_hs);
            if (b_hs && m_axi_bresp != 2'b00) err_q <= 1'b1;
            case (state)
                S_IDLE: if (start) begin
                    state    <= S_ADDR;
                    row_addr <= dst_addr;
                    stride_q <= dst_stride;
                    nrows_q  <= nrows;
                    ncols_q  <= ncols;
                    row      <= '0;
                    col      <= '0;
                    err_q    <= 1'b0;
                end
                S_ADDR: if (aw_hs) begin
                    state  <= S_DATA;
                    b_off  <= sa[2];
                    b_nel  <= nel[9:0];
                    b_last <= 8'(nbeats - 11'd1);
                    beat   <= '0;
                end
                S_DATA: if (m_axi_wvalid && m_axi_wready) begin
                    beat <= beat + 8'd1;
                    if (m_axi_wlast) begin
                        if (11'(col) + 11'(b_nel) == 11'(ncols_q)) begin
                            col      <= '0;
                            row      <= row + 1'b1;
                            row_addr <= row_addr + stride_q;
                            state    <= (row + 1'b1 == nrows_q) ? S_RESP : S_ADDR;
                        end else begin
                            col   <= col + COL_W'(b_nel);
                            state <= S_ADDR;
                        end
                    end
                end
                S_RESP: if (pending == 16'd0 || (pending == 16'd1 && b_hs)) begin
                    state <= S_IDLE;
                    done  <= 1'b1;
                    err   <= err_q || (b_hs && m_axi_bresp != 2'b00);
                end
                default: state <= S_IDLE;
            endcase
        end
    end

    logic unused;
    assign unused = ^m_axi_bid;
endmodule
