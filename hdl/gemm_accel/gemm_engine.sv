// GEMM job engine: validates a job, then computes C = A x B tile by tile.
//
// Schedule (docs/register-map.md, "Engine"): for every panel of NB columns of B, the K x NB panel
// is read into BBUF; for every tile of ROWS rows of A, the ROWS x K rows are read into ABUF, the
// ROWS x NB strip of C is computed COLS columns at a time by the ROWS x COLS MAC array (one k per
// cycle) into one of two CBUF banks, and the strip is written back by DMA while the next tile is
// read and computed into the other bank.
module gemm_engine #(
    parameter int ROWS    = 4,
    parameter int COLS    = 4,
    parameter int NB      = 64,      // columns of B held on chip (multiple of COLS)
    parameter int MAX_DIM = 1024,
    parameter int ID_W    = 4,
    parameter int RD_OUT  = 8
) (
    input  logic             clk,
    input  logic             rst_n,

    // job parameters (register values, latched at START)
    input  logic             start,
    input  logic             irq_en,
    input  logic             clear,
    input  logic [31:0]      cfg_m, cfg_n, cfg_k,
    input  logic [31:0]      cfg_lda, cfg_ldb, cfg_ldc,
    input  logic [63:0]      cfg_a, cfg_b, cfg_c,
    input  logic [10:0]      cfg_vector,

    // status
    output logic             busy,
    output logic             done,
    output logic             error,
    output logic [7:0]       error_code,
    output logic [63:0]      job_cycles,
    output logic [63:0]      job_dma_wait,
    output logic [31:0]      jobs_done,

    // MSI-X request
    output logic             msix_req_valid,
    input  logic             msix_req_ready,
    output logic [10:0]      msix_req_vector,

    // DMA master
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
    output logic             m_axi_bready,
    output logic [ID_W-1:0]  m_axi_arid,
    output logic [63:0]      m_axi_araddr,
    output logic [7:0]       m_axi_arlen,
    output logic [2:0]       m_axi_arsize,
    output logic [1:0]       m_axi_arburst,
    output logic             m_axi_arvalid,
    input  logic             m_axi_arready,
    input  logic [ID_W-1:0]  m_axi_rid,
    input  logic [63:0]      m_axi_rdata,
    input  logic [1:0]       m_axi_rresp,
    input  logic             m_axi_rlast,
    input  logic             m_axi_rvalid,
    output logic             m_axi_rready
);
    localparam logic [7:0] E_OK = 8'd0, E_ZERO_DIM = 8'd1, E_DIM_TOO_LARGE = 8'd2,
                           E_BAD_STRIDE = 8'd3, E_MISALIGNED = 8'd4, E_BUSY = 8'd5,
                           E_DMA_ERROR = 8'd6;

    localparam int DIM_W   = $clog2(MAX_DIM + 1);          // holds 0..MAX_DIM
    localparam int ABUF_N  = 1 << $clog2(ROWS * MAX_DIM);  // bytes of A on chip
    localparam int BBUF_N  = 1 << $clog2(MAX_DIM * NB);    // bytes of B on chip
    localparam int AI_W    = $clog2(ABUF_N);
    localparam int BI_W    = $clog2(BBUF_N);
    localparam int ROW_W   = (ROWS > 1) ? $clog2(ROWS) : 1;
    localparam int COL_W   = $clog2(NB + 1);

    typedef enum logic [3:0] {
        S_IDLE, S_CHECK, S_LOAD_B, S_WAIT_B, S_LOAD_A, S_WAIT_A, S_WAIT_PF, S_COMP, S_DRAIN,
        S_WRITE_C, S_FLUSH, S_IRQ
    } state_t;
    state_t state;

    // ---- job registers ----
    logic [31:0]      m_q, n_q, k_q, lda_q, ldb_q, ldc_q;
    logic [63:0]      a_q, b_q, c_q;
    logic             irq_en_q;
    logic [10:0]      vector_q;
    logic [7:0]       code_q;
    logic [63:0]      cyc_cnt, wait_cnt;

    // ---- loop registers ----
    logic [DIM_W-1:0] jb, ib;          // panel column, tile row
    logic [COL_W-1:0] nb;              // columns in this panel
    logic [ROW_W:0]   mr;              // rows in this tile
    logic [COL_W-1:0] jc;              // first column of the chunk being computed
    logic [DIM_W-1:0] kk;              // k being issued
    logic [BI_W-1:0]  kb;              // kk * nb
    logic [63:0]      b_panel_addr, c_panel_addr, a_tile_addr, c_tile_addr;
    logic [AI_W-1:0]  a_row_off [ROWS];// r * K
    logic             bank;            // CBUF bank the compute writes
    logic             a_cbank;         // ABUF bank the compute reads
    logic             a_wbank;         // ABUF bank the DMA read engine fills
    logic             pf_active;       // the next tile of A is being (or has been) prefetched
    logic             pf_done;         // ... and its read has finished
    logic [ROW_W:0]   pf_mr;           // rows of the prefetched tile
    logic             wr_err_seen;

    // ---- validation (docs/register-map.md "Error codes") ----
    logic [7:0] check_code;
    always_comb begin
        if (m_q == 0 || n_q == 0 || k_q == 0)                              check_code = E_ZERO_DIM;
        else if (m_q > MAX_DIM || n_q > MAX_DIM || k_q > MAX_DIM)          check_code = E_DIM_TOO_LARGE;
        else if ((lda_q != 0 && lda_q < k_q) || (ldb_q != 0 && ldb_q < n_q) ||
                 (ldc_q != 0 && ldc_q < n_q))                              check_code = E_BAD_STRIDE;
        else if (c_q[1:0] != 2'b00)                                        check_code = E_MISALIGNED;
        else                                                               check_code = E_OK;
    end

    logic [31:0] lda_e, ldb_e, ldc_e;  // effective strides (0 = packed)
    assign lda_e = (lda_q == 0) ? k_q : lda_q;
    assign ldb_e = (ldb_q == 0) ? n_q : ldb_q;
    assign ldc_e = (ldc_q == 0) ? n_q : ldc_q;

    logic [DIM_W-1:0] m_d, n_d, k_d;
    assign m_d = DIM_W'(m_q);
    assign n_d = DIM_W'(n_q);
    assign k_d = DIM_W'(k_q);

    logic [DIM_W-1:0] n_left, m_left;
    logic [COL_W-1:0] nb_next;
    logic [ROW_W:0]   mr_next;
    assign n_left  = n_d - jb;
    assign m_left  = m_d - ib;
    assign nb_next = (n_left < DIM_W'(NB))   ? COL_W'(n_left)   : COL_W'(NB);
    assign mr_next = (m_left < DIM_W'(ROWS)) ? (ROW_W+1)'(m_left) : (ROW_W+1)'(ROWS);

    // ---- DMA read engine and on-chip A/B buffers ----
    logic        rd_start, rd_busy, rd_done, rd_err, rd_to_b;
    logic [63:0] rd_src, rd_stride;
    logic [31:0] rd_row_bytes, rd_nrows;
    logic        rw_valid;
    logic [31:0] rw_base;
    logic [7:0]  rw_en;
    logic [63:0] rw_data;

    gemm_dma_rd #(.ID_W(ID_W), .NOUT(RD_OUT)) u_rd (
        .clk, .rst_n,
        .start(rd_start), .src_addr(rd_src), .src_stride(rd_stride),
        .row_bytes(rd_row_bytes), .nrows(rd_nrows),
        .busy(rd_busy), .done(rd_done), .err(rd_err),
        .wr_valid(rw_valid), .wr_base(rw_base), .wr_lane_en(rw_en), .wr_data(rw_data),
        .m_axi_arid, .m_axi_araddr, .m_axi_arlen, .m_axi_arsize, .m_axi_arburst,
        .m_axi_arvalid, .m_axi_arready, .m_axi_rid, .m_axi_rdata, .m_axi_rresp, .m_axi_rlast,
        .m_axi_rvalid, .m_axi_rready
    );

    logic [7:0] abuf [2 * ABUF_N];     // two banks: one computed from, one prefetched into
    logic [7:0] bbuf [BBUF_N];
    always_ff @(posedge clk) begin
        if (rw_valid) begin
            for (int l = 0; l < 8; l++) begin
                if (rw_en[l]) begin
                    if (rd_to_b) bbuf[BI_W'(rw_base + 32'(l))] <= rw_data[8*l +: 8];
                    else         abuf[{a_wbank, AI_W'(rw_base + 32'(l))}] <= rw_data[8*l +: 8];
                end
            end
        end
    end

    // ---- compute pipeline: issue (kk) -> operand registers -> MAC array ----
    logic [ROWS-1:0][7:0] a_vec;
    logic [COLS-1:0][7:0] b_vec;
    logic                 p1_valid, p1_first, p1_last, p2_last;
    logic [COL_W-1:0]     p1_jc, p2_jc;
    logic [ROWS-1:0][COLS-1:0][31:0] acc;
    logic                 issue;
    assign issue = (state == S_COMP);

    always_ff @(posedge clk) begin
        for (int r = 0; r < ROWS; r++) a_vec[r] <= abuf[{a_cbank, a_row_off[r] + AI_W'(kk)}];
        for (int c = 0; c < COLS; c++)
            b_vec[c] <= (32'(jc) + c < 32'(nb)) ? bbuf[kb + BI_W'(jc) + BI_W'(c)] : 8'd0;
        p1_first <= (kk == '0);
        p1_last  <= (kk == k_d - 1'b1);
        p1_jc    <= jc;
        p2_jc    <= p1_jc;
        if (!rst_n) begin
            p1_valid <= 1'b0;
            p2_last  <= 1'b0;
        end else begin
            p1_valid <= issue;
            p2_last  <= p1_valid && p1_last;
        end
    end

    gemm_mac_array #(.ROWS(ROWS), .COLS(COLS)) u_array (
        .clk, .en(p1_valid), .clr(p1_first), .a(a_vec), .b(b_vec), .acc(acc)
    );

    // ---- result buffer (two banks) and DMA write engine ----
    logic [31:0] cbuf [2][ROWS][NB];
    logic [ROW_W-1:0] wr_row;
    logic [COL_W-1:0] wr_col0, wr_col1;
    logic [31:0]      wr_d0, wr_d1;
    logic             wr_start, wr_busy, wr_done, wr_err, wr_bank;

    always_ff @(posedge clk) begin
        if (p2_last) begin
            for (int r = 0; r < ROWS; r++)
                for (int c = 0; c < COLS; c++)
                    if (32'(p2_jc) + c < NB) cbuf[bank][r][32'(p2_jc) + c] <= acc[r][c];
        end
    end
    assign wr_d0 = (32'(wr_col0) < NB) ? cbuf[wr_bank][wr_row][32'(wr_col0)] : 32'd0;
    assign wr_d1 = (32'(wr_col1) < NB) ? cbuf[wr_bank][wr_row][32'(wr_col1)] : 32'd0;

    gemm_dma_wr #(.ID_W(ID_W), .ROW_W(ROW_W), .COL_W(COL_W)) u_wr (
        .clk, .rst_n,
        .start(wr_start), .dst_addr(c_tile_addr), .dst_stride({30'd0, ldc_e, 2'b00}),
        .nrows(mr), .ncols(nb),
        .busy(wr_busy), .done(wr_done), .err(wr_err),
        .rd_row(wr_row), .rd_col0(wr_col0), .rd_col1(wr_col1), .rd_data0(wr_d0), .rd_data1(wr_d1),
        .m_axi_awid, .m_axi_awaddr, .m_axi_awlen, .m_axi_awsize, .m_axi_awburst, .m_axi_awvalid,
        .m_axi_awready, .m_axi_wdata, .m_axi_wstrb, .m_axi_wlast, .m_axi_wvalid, .m_axi_wready,
        .m_axi_bid, .m_axi_bresp, .m_axi_bvalid, .m_axi_bready
    );

    // ---- control ----
    assign busy            = (state != S_IDLE);
    assign msix_req_valid  = (state == S_IRQ) && irq_en_q;
    assign msix_req_vector = vector_q;

    logic last_chunk;
    assign last_chunk = (32'(jc) + COLS >= 32'(nb));

    // Prefetch of the next tile of A, started in the first compute cycle of a tile.
    logic             more_tiles, pf_start;
    logic [DIM_W-1:0] m_after;
    logic [63:0]      lda_rows;
    assign more_tiles = (32'(ib) + ROWS < m_q);
    assign m_after    = m_d - ib - DIM_W'(ROWS);
    assign lda_rows   = 64'(lda_e) * ROWS;
    assign pf_start   = (state == S_COMP) && jc == '0 && kk == '0 && !pf_active && more_tiles;

    always_comb begin
        rd_start     = 1'b0;
        rd_src       = a_tile_addr;
        rd_stride    = {32'd0, lda_e};
        rd_row_bytes = k_q;
        rd_nrows     = 32'(mr_next);
        wr_start     = 1'b0;
        if (state == S_LOAD_B) begin
            rd_start     = 1'b1;
            rd_src       = b_panel_addr;
            rd_stride    = {32'd0, ldb_e};
            rd_row_bytes = 32'(nb_next);
            rd_nrows     = k_q;
        end else if (state == S_LOAD_A) begin
            rd_start     = 1'b1;
        end else if (pf_start) begin
            rd_start     = 1'b1;
            rd_src       = a_tile_addr + lda_rows;
            rd_nrows     = (m_after < DIM_W'(ROWS)) ? 32'(m_after) : ROWS;
        end
        if (state == S_WRITE_C && !wr_busy) wr_start = 1'b1;
    end

    always_ff @(posedge clk) begin
        if (!rst_n) begin
            state        <= S_IDLE;
            done         <= 1'b0;
            error        <= 1'b0;
            error_code   <= E_OK;
            job_cycles   <= '0;
            job_dma_wait <= '0;
            jobs_done    <= '0;
            rd_to_b      <= 1'b0;
            bank         <= 1'b0;
            a_cbank      <= 1'b0;
            a_wbank      <= 1'b0;
            pf_active    <= 1'b0;
            pf_done      <= 1'b0;
            wr_bank      <= 1'b0;
        end else begin
            if (clear) begin
                done  <= 1'b0;
                error <= 1'b0;
            end
            if (state != S_IDLE) cyc_cnt <= cyc_cnt + 64'd1;
            if (wr_done && wr_err) wr_err_seen <= 1'b1;

            case (state)
                S_IDLE: if (start) begin
                    state    <= S_CHECK;
                    done       <= 1'b0;
                    error      <= 1'b0;
                    error_code <= E_OK;
                    m_q <= cfg_m;  n_q <= cfg_n;  k_q <= cfg_k;
                    lda_q <= cfg_lda;  ldb_q <= cfg_ldb;  ldc_q <= cfg_ldc;
                    a_q <= cfg_a;  b_q <= cfg_b;  c_q <= cfg_c;
                    irq_en_q    <= irq_en;
                    vector_q    <= cfg_vector;
                    cyc_cnt     <= 64'd1;
                    wait_cnt    <= 64'd0;
                    wr_err_seen <= 1'b0;
                end
                S_CHECK: begin
                    code_q <= check_code;
                    for (int r = 0; r < ROWS; r++) a_row_off[r] <= AI_W'(r) * AI_W'(k_q);
                    jb           <= '0;
                    pf_active    <= 1'b0;
                    pf_done      <= 1'b0;
                    b_panel_addr <= b_q;
                    c_panel_addr <= c_q;
                    state        <= (check_code == E_OK) ? S_LOAD_B : S_IRQ;
                end
                S_LOAD_B: begin
                    nb          <= nb_next;
                    rd_to_b     <= 1'b1;
                    ib          <= '0;
                    a_tile_addr <= a_q;
                    c_tile_addr <= c_panel_addr;
                    state       <= S_WAIT_B;
                end
                S_WAIT_B: if (rd_done) state <= rd_err ? S_FLUSH : S_LOAD_A;
                S_LOAD_A: begin
                    mr      <= mr_next;
                    rd_to_b <= 1'b0;
                    a_wbank <= a_cbank;
                    state   <= S_WAIT_A;
                end
                S_WAIT_PF: if (pf_done || rd_done) begin
                    pf_active <= 1'b0;
                    pf_done   <= 1'b0;
                    a_cbank   <= !a_cbank;
                    mr        <= pf_mr;
                    jc <= '0;
                    kk <= '0;
                    kb <= '0;
                    state <= rd_err ? S_FLUSH : S_COMP;
                end
                S_WAIT_A: if (rd_done) begin
                    jc <= '0;
                    kk <= '0;
                    kb <= '0;
                    state <= rd_err ? S_FLUSH : S_COMP;
                end
                S_COMP: begin
                    if (kk == k_d - 1'b1) begin
                        kk <= '0;
                        kb <= '0;
                        if (last_chunk) state <= S_DRAIN;
                        else            jc    <= jc + COL_W'(COLS);
                    end else begin
                        kk <= kk + 1'b1;
                        kb <= kb + BI_W'(nb);
                    end
                end
                S_DRAIN: if (!p1_valid && !p2_last) state <= S_WRITE_C;
                S_WRITE_C: if (!wr_busy) begin
                    // wr_start is asserted this cycle for bank 'bank' at c_tile_addr.
                    wr_bank <= bank;
                    bank    <= !bank;
                    state   <= pf_active ? S_WAIT_PF : S_LOAD_A;
                    ib          <= ib + DIM_W'(ROWS);
                    a_tile_addr <= a_tile_addr + lda_rows;
                    c_tile_addr <= c_tile_addr + {30'd0, ldc_e, 2'b00} * ROWS;
                    if (32'(ib) + ROWS >= m_q) begin
                        jb           <= jb + DIM_W'(NB);
                        b_panel_addr <= b_panel_addr + 64'(NB);
                        c_panel_addr <= c_panel_addr + 64'(NB * 4);
                        state        <= (32'(jb) + NB >= n_q) ? S_FLUSH : S_LOAD_B;
                    end
                    if (wr_err_seen) state <= S_FLUSH;
                end
                S_FLUSH: if (!wr_busy && !rd_busy) begin
                    if (code_q == E_OK && (rd_err || wr_err_seen || (wr_done && wr_err)))
                        code_q <= E_DMA_ERROR;
                    state <= S_IRQ;
                end
                S_IRQ: if (!irq_en_q || msix_req_ready) begin
                    // The job ends with the interrupt request: BUSY falls, DONE rises.
                    state        <= S_IDLE;
                    done         <= 1'b1;
                    error        <= (code_q != E_OK);
                    error_code   <= code_q;
                    job_cycles   <= cyc_cnt;
                    job_dma_wait <= wait_cnt;
                    jobs_done    <= jobs_done + 32'd1;
                end
                default: state <= S_IDLE;
            endcase

            // Cycles spent waiting for the DMA engines.
            if ((state == S_LOAD_B) || (state == S_WAIT_B) || (state == S_LOAD_A) ||
                (state == S_WAIT_A) || (state == S_WRITE_C && wr_busy) ||
                (state == S_WAIT_PF && !pf_done) ||
                (state == S_FLUSH && (wr_busy || rd_busy)))
                wait_cnt <= wait_cnt + 64'd1;

            if (pf_start) begin
                pf_active <= 1'b1;
                pf_done   <= 1'b0;
                pf_mr     <= (m_after < DIM_W'(ROWS)) ? (ROW_W+1)'(m_after) : (ROW_W+1)'(ROWS);
                rd_to_b   <= 1'b0;
                a_wbank   <= !a_cbank;
            end
            if (pf_active && rd_done && state != S_WAIT_PF) pf_done <= 1'b1;

            // A START while busy is refused (register map: BUSY).
            if (start && state != S_IDLE) begin
                error      <= 1'b1;
                error_code <= E_BUSY;
            end
        end
    end

endmodule
