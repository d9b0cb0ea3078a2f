// GEMM job engine: validates a job, then computes C = A x B tile by tile.
//
// Schedule (docs/register-map.md, "Engine"): C is computed in panels of NB columns, within a
// panel in blocks of AM rows, within a block in tiles of ROWS rows. A tile needs the K x NB panel
// of B (BBUF) and its ROWS x K rows of A (ABUF, which holds the AM x K block); the ROWS x COLS
// MAC array computes the tile's ROWS x NB strip of C, COLS columns at a time, one k per cycle,
// into one of two CBUF banks, from which the DMA write engine writes it back while the next tile
// computes. ABUF and BBUF have two banks each: during the first tile of a block, one DMA read
// engine fills the other A bank with the next block and, during the first tile of a panel, a
// second engine fills the other B bank with the next panel. Both read engines share the AXI read
// channel (gemm_rd_mux).
module gemm_engine #(
    parameter int ROWS    = 4,
    parameter int COLS    = 4,
    parameter int NB      = 64,      // columns of B held on chip (multiple of COLS)
    parameter int AM      = 32,      // rows of A held on chip (multiple of ROWS)
    parameter int MAX_DIM = 1024,
    parameter int ID_W    = 4,
    parameter int RD_OUT  = 16       // DMA read bursts in flight, half per read engine
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
    // ERROR codes: docs/register-map.md, defined in gemm-abi/src/lib.rs (`ErrorCode`; checked by
    // gemm-abi/tests/rtl.rs).
    localparam logic [7:0] E_OK = 8'd0, E_ZERO_DIM = 8'd1, E_DIM_TOO_LARGE = 8'd2,
                           E_BAD_STRIDE = 8'd3, E_MISALIGNED = 8'd4, E_BUSY = 8'd5,
                           E_DMA_ERROR = 8'd6;

    localparam int DIM_W   = $clog2(MAX_DIM + 1);          // holds 0..MAX_DIM
    localparam int ABUF_N  = 1 << $clog2(AM * MAX_DIM);    // bytes of A per bank
    localparam int BBUF_N  = 1 << $clog2(MAX_DIM * NB);    // bytes of B per bank
    localparam int AI_W    = $clog2(ABUF_N);
    localparam int BI_W    = $clog2(BBUF_N);
    localparam int ROW_W   = (ROWS > 1) ? $clog2(ROWS) : 1;
    localparam int COL_W   = $clog2(NB + 1);
    localparam int RID_W   = ID_W - 1;                     // IDs of one read engine

    typedef enum logic [3:0] {
        S_IDLE, S_CHECK, S_FIRST, S_NEXT, S_COMP, S_DRAIN, S_WRITE_C, S_FLUSH, S_IRQ
    } state_t;
    state_t state;

    // ---- job registers ----
    logic [31:0]      m_q, n_q, k_q, lda_q, ldb_q, ldc_q;
    logic [63:0]      a_q, b_q, c_q;
    logic             irq_en_q;
    logic [10:0]      vector_q;
    logic [7:0]       code_q;
    logic [63:0]      cyc_cnt, wait_cnt;

    // ---- current tile ----
    logic [DIM_W-1:0] jb, ib;          // first column of the panel, first row of the tile
    logic [COL_W-1:0] nb;              // columns in this panel
    logic [ROW_W:0]   mr;              // rows in this tile
    logic             new_panel;       // the tile to start is the first of a panel
    logic             new_block;       // ... the first of a block of AM rows of A
    logic [DIM_W-1:0] blk_ib;          // first row of the block of A on chip
    logic [AI_W-1:0]  a_tile_off;      // (ib - blk_ib) * K: the tile's rows in ABUF
    logic [COL_W-1:0] jc;              // first column of the chunk being computed
    logic [DIM_W-1:0] kk;              // k being issued
    logic [BI_W-1:0]  kb;              // kk * nb
    logic [63:0]      a_blk_addr, c_tile_addr, c_panel_addr;
    logic [AI_W-1:0]  a_row_off [ROWS];// r * K
    logic             bank;            // CBUF bank the compute writes
    logic             a_cbank, b_cbank;// ABUF/BBUF banks the compute reads

    // ---- loads in flight (the other bank) ----
    logic             al_active, al_done;   // the next block of A
    logic             bl_active, bl_done;   // the next panel of B
    logic [COL_W-1:0] bl_nb;
    logic             dma_err_q;

    // ---- validation (docs/register-map.md "Error codes") ----
    logic [7:0] check_code;
    always_comb begin
        if (state != S_CHECK)                                              check_code = E_OK;
        else if (m_q == 0 || n_q == 0 || k_q == 0)                         check_code = E_ZERO_DIM;
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

    // ---- the tile after the current one ----
    // Tiles go down a block of AM rows, then to the next block, then to the next panel. When all
    // of A fits in one block (M <= AM) it stays on chip for every panel.
    logic             more_in_blk, more_blocks, more_panels, has_next, a_resident, has_next_blk;
    logic [DIM_W-1:0] jb_nx, n_rest, m_tile, m_blk;
    logic [ROW_W:0]   mr_cur;
    logic [COL_W-1:0] nb_nx;
    logic [63:0]      ldc_rows, lda_blk, a_nxb_addr;
    logic [31:0]      a_nxb_rows;
    logic             tile_start;      // first compute cycle of a tile
    assign tile_start = (state == S_COMP) && jc == '0 && kk == '0;
    always_comb begin
        ldc_rows     = '0;
        lda_blk      = '0;
        a_resident   = 1'b0;
        more_in_blk  = 1'b0;
        more_blocks  = 1'b0;
        more_panels  = 1'b0;
        has_next     = 1'b0;
        has_next_blk = 1'b0;
        jb_nx        = '0;
        n_rest       = '0;
        nb_nx        = '0;
        a_nxb_addr   = '0;
        m_blk        = '0;
        a_nxb_rows   = '0;
        m_tile       = '0;
        mr_cur       = '0;
        // Evaluated only where used (cheaper to simulate; the hardware is the same).
        if (state == S_WRITE_C || state == S_NEXT || tile_start) begin
            lda_blk      = 64'(lda_e) * AM;
            ldc_rows     = {30'd0, ldc_e, 2'b00} * ROWS;
            a_resident   = (m_q <= AM);
            more_in_blk  = (32'(ib) + ROWS < m_q) && (32'(ib) + ROWS < 32'(blk_ib) + AM);
            more_blocks  = (32'(blk_ib) + AM < m_q);
            more_panels  = (32'(jb) + NB < n_q);
            has_next     = more_in_blk || more_blocks || more_panels;
            has_next_blk = more_blocks || (more_panels && !a_resident);
            jb_nx        = jb + DIM_W'(NB);
            n_rest       = n_d - jb_nx;
            nb_nx        = (n_rest < DIM_W'(NB)) ? COL_W'(n_rest) : COL_W'(NB);
            // The block after the current one: the next AM rows, or rows 0.. for the next panel.
            a_nxb_addr   = more_blocks ? a_blk_addr + lda_blk : a_q;
            m_blk        = more_blocks ? m_d - blk_ib - DIM_W'(AM) : m_d;
            a_nxb_rows   = (m_blk < DIM_W'(AM)) ? 32'(m_blk) : AM;
            // Rows of the tile at ib.
            m_tile       = m_d - ib;
            mr_cur       = (m_tile < DIM_W'(ROWS)) ? (ROW_W+1)'(m_tile) : (ROW_W+1)'(ROWS);
        end
    end

    // ---- DMA read engines (A rows, B panels) on one AXI read channel ----
    logic             ra_start, ra_busy, ra_done, ra_err;
    logic             rb_start, rb_busy, rb_done, rb_err;
    logic [63:0]      ra_src, rb_src;
    logic [31:0]      ra_nrows;
    logic [31:0]      rb_row_bytes;
    logic             wa_valid, wb_valid;
    logic [31:0]      wa_base, wb_base;
    logic [7:0]       wa_en, wb_en;
    logic [63:0]      wa_data, wb_data;
    logic             a_wbank, b_wbank;

    logic [RID_W-1:0] pa_arid, pb_arid, pa_rid, pb_rid;
    logic [63:0]      pa_araddr, pb_araddr;
    logic [7:0]       pa_arlen, pb_arlen;
    logic [2:0]       pa_arsize, pb_arsize;
    logic [1:0]       pa_arburst, pb_arburst;
    logic             pa_arvalid, pa_arready, pa_rvalid, pa_rready;
    logic             pb_arvalid, pb_arready, pb_rvalid, pb_rready;

    gemm_dma_rd #(.ID_W(RID_W), .NOUT(RD_OUT / 2)) u_rd_a (
        .clk, .rst_n,
        .start(ra_start), .src_addr(ra_src), .src_stride({32'd0, lda_e}),
        .row_bytes(k_q), .nrows(ra_nrows),
        .busy(ra_busy), .done(ra_done), .err(ra_err),
        .wr_valid(wa_valid), .wr_base(wa_base), .wr_lane_en(wa_en), .wr_data(wa_data),
        .m_axi_arid(pa_arid), .m_axi_araddr(pa_araddr), .m_axi_arlen(pa_arlen),
        .m_axi_arsize(pa_arsize), .m_axi_arburst(pa_arburst), .m_axi_arvalid(pa_arvalid),
        .m_axi_arready(pa_arready), .m_axi_rid(pa_rid), .m_axi_rdata(m_axi_rdata),
        .m_axi_rresp(m_axi_rresp), .m_axi_rlast(m_axi_rlast), .m_axi_rvalid(pa_rvalid),
        .m_axi_rready(pa_rready)
    );

    gemm_dma_rd #(.ID_W(RID_W), .NOUT(RD_OUT / 2)) u_rd_b (
        .clk, .rst_n,
        .start(rb_start), .src_addr(rb_src), .src_stride({32'd0, ldb_e}),
        .row_bytes(rb_row_bytes), .nrows(k_q),
        .busy(rb_busy), .done(rb_done), .err(rb_err),
        .wr_valid(wb_valid), .wr_base(wb_base), .wr_lane_en(wb_en), .wr_data(wb_data),
        .m_axi_arid(pb_arid), .m_axi_araddr(pb_araddr), .m_axi_arlen(pb_arlen),
        .m_axi_arsize(pb_arsize), .m_axi_arburst(pb_arburst), .m_axi_arvalid(pb_arvalid),
        .m_axi_arready(pb_arready), .m_axi_rid(pb_rid), .m_axi_rdata(m_axi_rdata),
        .m_axi_rresp(m_axi_rresp), .m_axi_rlast(m_axi_rlast), .m_axi_rvalid(pb_rvalid),
        .m_axi_rready(pb_rready)
    );

    gemm_rd_mux #(.ID_W(ID_W)) u_rd_mux (
        .clk, .rst_n,
        .p0_arid(pa_arid), .p0_araddr(pa_araddr), .p0_arlen(pa_arlen), .p0_arsize(pa_arsize),
        .p0_arburst(pa_arburst), .p0_arvalid(pa_arvalid), .p0_arready(pa_arready),
        .p0_rid(pa_rid), .p0_rvalid(pa_rvalid), .p0_rready(pa_rready),
        .p1_arid(pb_arid), .p1_araddr(pb_araddr), .p1_arlen(pb_arlen), .p1_arsize(pb_arsize),
        .p1_arburst(pb_arburst), .p1_arvalid(pb_arvalid), .p1_arready(pb_arready),
        .p1_rid(pb_rid), .p1_rvalid(pb_rvalid), .p1_rready(pb_rready),
        .m_arid(m_axi_arid), .m_araddr(m_axi_araddr), .m_arlen(m_axi_arlen),
        .m_arsize(m_axi_arsize), .m_arburst(m_axi_arburst), .m_arvalid(m_axi_arvalid),
        .m_arready(m_axi_arready), .m_rid(m_axi_rid), .m_rvalid(m_axi_rvalid),
        .m_rready(m_axi_rready)
    );

    logic [7:0] abuf [2 * ABUF_N];     // two banks: one computed from, one filled
    logic [7:0] bbuf [2 * BBUF_N];
    always_ff @(posedge clk) begin
        for (int l = 0; l < 8; l++) begin
            if (wa_valid && wa_en[l]) abuf[{a_wbank, AI_W'(wa_base + 32'(l))}] <= wa_data[8*l +: 8];
            if (wb_valid && wb_en[l]) bbuf[{b_wbank, BI_W'(wb_base + 32'(l))}] <= wb_data[8*l +: 8];
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
        if (issue) begin
            for (int r = 0; r < ROWS; r++) a_vec[r] <= abuf[{a_cbank, a_tile_off + a_row_off[r] + AI_W'(kk)}];
            for (int c = 0; c < COLS; c++)
                b_vec[c] <= (32'(jc) + c < 32'(nb)) ? bbuf[{b_cbank, kb + BI_W'(jc) + BI_W'(c)}] : 8'd0;
        end
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
    always_comb begin
        wr_d0 = 32'd0;
        wr_d1 = 32'd0;
        if (wr_busy) begin
            if (32'(wr_col0) < NB) wr_d0 = cbuf[wr_bank][wr_row][32'(wr_col0)];
            if (32'(wr_col1) < NB) wr_d1 = cbuf[wr_bank][wr_row][32'(wr_col1)];
        end
    end

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

    logic last_chunk, a_pf, b_pf, dma_err_now, next_ready;
    assign last_chunk  = (32'(jc) + COLS >= 32'(nb));
    // First compute cycle of a tile: in the first tile of a block, prefetch the next block of A;
    // in the first tile of a panel, the next panel of B.
    assign a_pf        = tile_start && !al_active && ib == blk_ib && has_next_blk;
    assign b_pf        = tile_start && !bl_active && ib == '0 && more_panels;
    assign dma_err_now = dma_err_q || (ra_done && ra_err) || (rb_done && rb_err) || (wr_done && wr_err);
    assign next_ready  = (!new_block || al_done) && (!new_panel || bl_done);

    always_comb begin
        ra_start     = 1'b0;
        ra_src       = a_nxb_addr;
        ra_nrows     = a_nxb_rows;
        rb_start     = 1'b0;
        rb_src       = b_q + 64'(jb_nx);
        rb_row_bytes = 32'(nb_nx);
        if (state == S_FIRST) begin
            // Tile (0, 0): its block of A and panel of B.
            ra_start     = 1'b1;
            ra_src       = a_q;
            ra_nrows     = (m_d < DIM_W'(AM)) ? 32'(m_d) : AM;
            rb_start     = 1'b1;
            rb_src       = b_q;
            rb_row_bytes = (n_d < DIM_W'(NB)) ? 32'(n_d) : NB;
        end
        if (a_pf) ra_start = 1'b1;
        if (b_pf) rb_start = 1'b1;
        wr_start = (state == S_WRITE_C) && !wr_busy && !dma_err_now;
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
            bank         <= 1'b0;
            wr_bank      <= 1'b0;
            a_cbank      <= 1'b0;
            b_cbank      <= 1'b0;
            a_wbank      <= 1'b0;
            b_wbank      <= 1'b0;
            al_active    <= 1'b0;
            bl_active    <= 1'b0;
            al_done      <= 1'b0;
            bl_done      <= 1'b0;
        end else begin
            if (clear) begin
                done  <= 1'b0;
                error <= 1'b0;
            end
            if (state != S_IDLE) cyc_cnt <= cyc_cnt + 64'd1;

            // Loads: started here, finished by the engines' DONE pulses, consumed in S_NEXT.
            if (ra_start) begin
                al_active <= 1'b1;
                al_done   <= 1'b0;
                a_wbank   <= !a_cbank;
            end
            if (rb_start) begin
                bl_active <= 1'b1;
                bl_done   <= 1'b0;
                bl_nb     <= COL_W'(rb_row_bytes);
                b_wbank   <= !b_cbank;
            end
            if (ra_done) al_done <= 1'b1;
            if (rb_done) bl_done <= 1'b1;
            if (dma_err_now) dma_err_q <= 1'b1;

            case (state)
                S_IDLE: if (start) begin
                    state      <= S_CHECK;
                    done       <= 1'b0;
                    error      <= 1'b0;
                    error_code <= E_OK;
                    m_q <= cfg_m;  n_q <= cfg_n;  k_q <= cfg_k;
                    lda_q <= cfg_lda;  ldb_q <= cfg_ldb;  ldc_q <= cfg_ldc;
                    a_q <= cfg_a;  b_q <= cfg_b;  c_q <= cfg_c;
                    irq_en_q  <= irq_en;
                    vector_q  <= cfg_vector;
                    cyc_cnt   <= 64'd1;
                    wait_cnt  <= 64'd0;
                    dma_err_q <= 1'b0;
                end
                S_CHECK: begin
                    code_q <= check_code;
                    for (int r = 0; r < ROWS; r++) a_row_off[r] <= AI_W'(r) * AI_W'(k_q);
                    jb           <= '0;
                    ib           <= '0;
                    new_panel    <= 1'b1;
                    new_block    <= 1'b1;
                    blk_ib       <= '0;
                    a_tile_off   <= '0;
                    a_blk_addr   <= a_q;
                    c_tile_addr  <= c_q;
                    c_panel_addr <= c_q;
                    state        <= (check_code == E_OK) ? S_FIRST : S_IRQ;
                end
                S_FIRST: state <= S_NEXT;
                // Wait until the tile's operands are in the other banks, then switch to them.
                S_NEXT: if (dma_err_q) begin
                    state <= S_FLUSH;
                end else if (next_ready) begin
                    mr <= mr_cur;
                    if (new_block) begin
                        al_active <= 1'b0;
                        al_done   <= 1'b0;
                        a_cbank   <= !a_cbank;
                    end
                    if (new_panel) begin
                        bl_active <= 1'b0;
                        bl_done   <= 1'b0;
                        b_cbank   <= !b_cbank;
                        nb        <= bl_nb;
                    end
                    jc    <= '0;
                    kk    <= '0;
                    kb    <= '0;
                    state <= S_COMP;
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
                // Hand the strip to the write engine (wr_start), then move to the next tile.
                S_WRITE_C: if (dma_err_now) begin
                    state <= S_FLUSH;
                end else if (!wr_busy) begin
                    wr_bank     <= bank;
                    bank        <= !bank;
                    new_block   <= 1'b0;
                    new_panel   <= 1'b0;
                    if (more_in_blk) begin
                        ib          <= ib + DIM_W'(ROWS);
                        a_tile_off  <= a_tile_off + AI_W'(ROWS) * AI_W'(k_q);
                        c_tile_addr <= c_tile_addr + ldc_rows;
                    end else if (more_blocks) begin
                        ib          <= blk_ib + DIM_W'(AM);
                        blk_ib      <= blk_ib + DIM_W'(AM);
                        a_blk_addr  <= a_blk_addr + lda_blk;
                        a_tile_off  <= '0;
                        new_block   <= 1'b1;
                        c_tile_addr <= c_tile_addr + ldc_rows;
                    end else begin
                        ib           <= '0;
                        blk_ib       <= '0;
                        a_blk_addr   <= a_q;
                        a_tile_off   <= '0;
                        new_block    <= !a_resident;
                        new_panel    <= 1'b1;
                        jb           <= jb_nx;
                        c_panel_addr <= c_panel_addr + 64'(NB * 4);
                        c_tile_addr  <= c_panel_addr + 64'(NB * 4);
                    end
                    state <= has_next ? S_NEXT : S_FLUSH;
                end
                S_FLUSH: if (!wr_busy && !ra_busy && !rb_busy) begin
                    if (code_q == E_OK && dma_err_now) code_q <= E_DMA_ERROR;
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

            // Cycles in which the engine could not compute because of DMA.
            if ((state == S_FIRST) || (state == S_NEXT) || (state == S_WRITE_C && wr_busy) ||
                (state == S_FLUSH && (wr_busy || ra_busy || rb_busy)))
                wait_cnt <= wait_cnt + 64'd1;

            // A START while busy is refused (register map: BUSY).
            if (start && state != S_IDLE) begin
                error      <= 1'b1;
                error_code <= E_BUSY;
            end
        end
    end

endmodule
