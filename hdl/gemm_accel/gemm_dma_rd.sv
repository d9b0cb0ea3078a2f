// DMA read engine (AXI4 master, AR/R channels).
//
// Reads NROWS rows of ROW_BYTES bytes each, row r at SRC_ADDR + r * SRC_STRIDE, and hands the
// bytes to the buffer write port numbered 0, 1, 2, ... in row order. Rows that are back to back in
// memory (SRC_STRIDE == ROW_BYTES) are read as one segment. Each segment is split into INCR bursts
// of 8-byte beats (at most 256 beats, never crossing a 4 KiB boundary); the first beat of a burst
// starts at the 8-byte aligned address and the unused leading/trailing lanes are dropped.
// Up to NOUT bursts are outstanding, each with its own ARID, so responses may come back in any
// order across IDs. A response other than OKAY is remembered and reported with DONE.
module gemm_dma_rd #(
    parameter int ID_W = 4,
    parameter int NOUT = 8            // outstanding bursts, at most 2**ID_W
) (
    input  logic            clk,
    input  logic            rst_n,

    input  logic            start,        // ignored while busy
    input  logic [63:0]     src_addr,
    input  logic [63:0]     src_stride,   // bytes
    input  logic [31:0]     row_bytes,    // > 0
    input  logic [31:0]     nrows,        // > 0
    output logic            busy,
    output logic            done,         // one-cycle pulse when all bursts completed
    output logic            err,          // with done: some burst had a non-OKAY response

    output logic            wr_valid,     // buffer write: lane l goes to index wr_base + l
    output logic [31:0]     wr_base,
    output logic [7:0]      wr_lane_en,
    output logic [63:0]     wr_data,

    output logic [ID_W-1:0] m_axi_arid,
    output logic [63:0]     m_axi_araddr,
    output logic [7:0]      m_axi_arlen,
    output logic [2:0]      m_axi_arsize,
    output logic [1:0]      m_axi_arburst,
    output logic            m_axi_arvalid,
    input  logic            m_axi_arready,
    input  logic [ID_W-1:0] m_axi_rid,
    input  logic [63:0]     m_axi_rdata,
    input  logic [1:0]      m_axi_rresp,
    input  logic            m_axi_rlast,
    input  logic            m_axi_rvalid,
    output logic            m_axi_rready
);
    localparam int SW = (NOUT > 1) ? $clog2(NOUT) : 1;

    // Work still to be requested.
    logic        have_work;
    logic [63:0] cur_addr;      // next byte to request in the current segment
    logic [63:0] row_addr;      // start of the current segment
    logic [63:0] stride_q;
    logic [31:0] seg_bytes;     // length of every segment
    logic [31:0] seg_rem;       // bytes left in the current segment
    logic [31:0] rows_left;     // segments left, including the current one
    logic [31:0] dest_off;      // buffer index of cur_addr's byte
    logic        err_q;

    // Outstanding bursts, indexed by ARID.
    logic [NOUT-1:0] slot_busy;
    logic [2:0]      slot_off   [NOUT];  // cur_addr[2:0] at issue: leading lanes to drop
    logic [11:0]     slot_bytes [NOUT];  // useful bytes in the burst (1..2048)
    logic [31:0]     slot_dest  [NOUT];
    logic [7:0]      slot_beat  [NOUT];

    // Next burst from the current position, and the lowest free slot for it. (Evaluated only
    // while a burst can be set up: cheaper to simulate, same hardware.)
    logic          setup;
    logic [12:0]   to_4k, to_max, lim, nbytes;
    logic [12:0]   beats;
    logic          slot_free;
    logic [SW-1:0] free_idx;
    assign setup = have_work && !m_axi_arvalid;
    always_comb begin
        to_4k     = '0;
        to_max    = '0;
        lim       = '0;
        nbytes    = '0;
        beats     = '0;
        slot_free = 1'b0;
        free_idx  = '0;
        if (setup) begin
            to_4k  = 13'd4096 - {1'b0, cur_addr[11:0]};
            to_max = 13'd2048 - {10'd0, cur_addr[2:0]};
            lim    = (to_4k < to_max) ? to_4k : to_max;
            nbytes = (seg_rem < {19'd0, lim}) ? seg_rem[12:0] : lim;
            beats  = ({10'd0, cur_addr[2:0]} + nbytes + 13'd7) >> 3;
            for (int i = NOUT - 1; i >= 0; i--) begin
                if (!slot_busy[i]) begin
                    slot_free = 1'b1;
                    free_idx  = SW'(i);
                end
            end
        end
    end

    // Read data: place the useful lanes of the beat.
    logic [SW-1:0] rslot;
    logic [10:0]   rpos;    // byte position of lane 0 within the burst (from the aligned start)
    assign rslot        = SW'(m_axi_rid);
    assign rpos         = {slot_beat[rslot], 3'b000};
    assign m_axi_rready = 1'b1;
    logic          rhit;    // the beat belongs to a burst of ours
    assign rhit         = ({{(32-ID_W){1'b0}}, m_axi_rid} < NOUT) && slot_busy[rslot];
    assign wr_valid     = m_axi_rvalid && rhit;
    assign wr_data      = m_axi_rdata;
    always_comb begin
        logic [11:0] p;
        p          = '0;
        wr_base    = '0;
        wr_lane_en = '0;
        if (m_axi_rvalid) begin
            wr_base = slot_dest[rslot] + 32'(rpos) - 32'(slot_off[rslot]);
            for (int l = 0; l < 8; l++) begin
                p = {1'b0, rpos} + 12'(l);
                wr_lane_en[l] = (p >= {9'd0, slot_off[rslot]}) &&
                                ((p - {9'd0, slot_off[rslot]}) < slot_bytes[rslot]);
            end
        end
    end

    assign m_axi_arsize  = 3'd3;
    assign m_axi_arburst = 2'b01;
    assign busy          = have_work || (slot_busy != '0) || m_axi_arvalid;

    always_ff @(posedge clk) begin
        if (!rst_n) begin
            have_work     <= 1'b0;
            slot_busy     <= '0;
            m_axi_arvalid <= 1'b0;
            err_q         <= 1'b0;
            for (int i = 0; i < NOUT; i++) slot_beat[i] <= '0;
        end else begin
            if (start && !busy) begin
                have_work <= 1'b1;
                err_q     <= 1'b0;
                cur_addr  <= src_addr;
                row_addr  <= src_addr;
                stride_q  <= src_stride;
                dest_off  <= '0;
                if (src_stride == {32'd0, row_bytes}) begin
                    seg_bytes <= row_bytes * nrows;
                    seg_rem   <= row_bytes * nrows;
                    rows_left <= 32'd1;
                end else begin
                    seg_bytes <= row_bytes;
                    seg_rem   <= row_bytes;
                    rows_left <= nrows;
                end
            end

            // Address channel: one request register; a new burst is set up when it is empty.
            if (m_axi_arvalid && m_axi_arready) m_axi_arvalid <= 1'b0;
            if (setup && slot_free) begin
                m_axi_arvalid         <= 1'b1;
                m_axi_arid            <= ID_W'(free_idx);
                m_axi_araddr          <= {cur_addr[63:3], 3'b000};
                m_axi_arlen           <= 8'(beats - 13'd1);
                slot_busy[free_idx]   <= 1'b1;
                slot_off[free_idx]    <= cur_addr[2:0];
                slot_bytes[free_idx]  <= nbytes[11:0];
                slot_dest[free_idx]   <= dest_off;
                dest_off              <= dest_off + 32'(nbytes);
                if (seg_rem == 32'(nbytes)) begin
                    if (rows_left == 32'd1) begin
                        have_work <= 1'b0;
                    end else begin
                        rows_left <= rows_left - 32'd1;
                        row_addr  <= row_addr + stride_q;
                        cur_addr  <= row_addr + stride_q;
                        seg_rem   <= seg_bytes;
                    end
                end else begin
                    cur_addr <= cur_addr + 64'(nbytes);
                    seg_rem  <= seg_rem - 32'(nbytes);
                end
            end

            // Data channel.
            if (m_axi_rvalid && rhit) begin
                if (m_axi_rresp != 2'b00) err_q <= 1'b1;
                if (m_axi_rlast) begin
                    slot_busy[rslot] <= 1'b0;
                    slot_beat[rslot] <= '0;
                end else begin
                    slot_beat[rslot] <= slot_beat[rslot] + 8'd1;
                end
            end

        end
    end

    // DONE pulses on the falling edge of BUSY; ERR is valid with it.
    logic busy_q;
    always_ff @(posedge clk) begin
        if (!rst_n) busy_q <= 1'b0;
        else        busy_q <= busy;
    end
    assign done = busy_q && !busy;
    assign err  = err_q;
endmodule
