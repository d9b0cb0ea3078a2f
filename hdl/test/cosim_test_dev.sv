// cosim_test_dev: the small user design the bridge's integration tests run behind cosim_pcie_ep.
//
// BAR0 (4 KiB, AXI 0x0000_0000) registers, 64-bit, byte-writable:
//   0x000 ID          RO  0x7e57_0001_c051_0001
//   0x008 SCRATCH0    RW  64 bits, every byte lane writable
//   0x010 SCRATCH1    RW
//   0x100 DMA_SRC     RW  guest address of the copy source
//   0x108 DMA_DST     RW  guest address of the copy destination
//   0x110 DMA_LEN     RW  [31:0] bytes to copy (1..4096); [47:32] max beats per burst (0 = 16)
//   0x118 DMA_CTRL    WO  bit0 START, bit1 IRQ_EN, bit2 STREAM (streaming copy, see below),
//                         [26:16] MSI-X vector on completion
//   0x120 DMA_STATUS  RO  bit0 BUSY, bit1 DONE, bit2 ERROR (bad length or AXI error); [63:32] copies done
//   0x128 IRQ_TRIGGER WO  raises MSI-X vector [10:0]
//   0x130 COUNTERS    RO  [31:0] NIC frames looped back, [63:32] UART bytes echoed
//   0x138 CYCLES      RO  free-running cycle counter
//   0x140 STALL       RW  read latency in cycles for offset 0x148 (tests the MMIO timeout)
//   0x148 SLOW        RO  answers 0x5105 after STALL cycles
//   0x150 BW_ADDR     RW  start address of a single test write burst
//   0x158 BW_CFG      RW  [7:0] AWLEN, [10:8] AWSIZE, [13:12] AWBURST, [23:16] strobe mask (ANDed
//                         with each beat's byte lanes), [31:24] data seed, bit 32 START (write 1);
//                         byte j of beat i is seed + 8*i + j. Status: BW_CFG bit 33 BUSY, 34 DONE
//   0x160 BR_ADDR     RW  start address of a single test read burst
//   0x168 BR_CFG      RW  [7:0] ARLEN, [10:8] ARSIZE, [13:12] ARBURST, bit 32 START (write 1);
//                         status: bit 33 BUSY, 34 DONE, 35 an RRESP was not OKAY. A START while
//                         the copy engine runs is kept (BUSY) and starts the burst once it is idle
//   0x170 BR_SUM      RO  sum = sum * 31 + byte over the bytes of every beat's byte lanes, in
//                         beat order and lane order
//   0x178 DMA_CYCLES  RO  clocks the last copy took, from the cycle its START was taken to its
//                         completion (bench: copy bytes against data width x cycles)
//   0xfe0 SLVERR      RO  answers with SLVERR
// BAR1 (4 KiB, AXI 0x0001_0000): RAM, 512 x 64 bits, byte-writable.
// Accesses with another BAR index on a*user answer DECERR.
// The copy engine reads the source with up to 4 INCR bursts in flight (IDs 0..3), buffers it,
// then writes the destination with 8-byte beats whose strobes cover exactly the destination
// bytes (partial strobes at unaligned ends): store and forward, at most 50 % of the bus.
// With STREAM (DMA_CTRL bit 2, taken at START) it overlaps the two: up to 16 read bursts in flight
// (IDs 0..15; the shell's MAX_DMA_READS is 16), and the write bursts start at once, each beat
// waiting (WVALID low) until the bytes it needs have arrived in the buffer. Same buffer, byte
// lanes and strobes as store and forward; the source and the destination must not overlap (a
// write may reach memory before the read of the same bytes). A read error sets ERROR in both
// modes, and the copy still writes the destination (with the data the failed beats carried).
// NIC: frames from the network are sent back unchanged. UART: prints "cosim test ready\n" after
// reset, then echoes every byte it receives.
module cosim_test_dev #(
  parameter int AXI_ID_W = 4
) (
  input  logic clk,
  input  logic rst_n,
  input  logic [63:0] r_awaddr, input logic [2:0] r_awuser, input logic r_awvalid, output logic r_awready,
  input  logic [63:0] r_wdata, input logic [7:0] r_wstrb, input logic r_wvalid, output logic r_wready,
  output logic [1:0] r_bresp, output logic r_bvalid, input logic r_bready,
  input  logic [63:0] r_araddr, input logic [2:0] r_aruser, input logic r_arvalid, output logic r_arready,
  output logic [63:0] r_rdata, output logic [1:0] r_rresp, output logic r_rlast, output logic r_rvalid,
  input  logic r_rready,
  output logic [AXI_ID_W-1:0] d_awid, output logic [63:0] d_awaddr, output logic [7:0] d_awlen,
  output logic [2:0] d_awsize, output logic [1:0] d_awburst, output logic d_awvalid, input logic d_awready,
  output logic [63:0] d_wdata, output logic [7:0] d_wstrb, output logic d_wlast, output logic d_wvalid,
  input  logic d_wready,
  input  logic [AXI_ID_W-1:0] d_bid, input logic [1:0] d_bresp, input logic d_bvalid, output logic d_bready,
  output logic [AXI_ID_W-1:0] d_arid, output logic [63:0] d_araddr, output logic [7:0] d_arlen,
  output logic [2:0] d_arsize, output logic [1:0] d_arburst, output logic d_arvalid, input logic d_arready,
  input  logic [AXI_ID_W-1:0] d_rid, input logic [63:0] d_rdata, input logic [1:0] d_rresp,
  input  logic d_rlast, input logic d_rvalid, output logic d_rready,
  output logic irq_valid, input logic irq_ready, output logic [10:0] irq_vector,
  output logic [63:0] tx_tdata, output logic [7:0] tx_tkeep, output logic tx_tlast, output logic tx_tvalid,
  input  logic tx_tready,
  input  logic [63:0] rx_tdata, input logic [7:0] rx_tkeep, input logic rx_tlast, input logic rx_tvalid,
  output logic rx_tready,
  output logic u_tx_valid, input logic u_tx_ready, output logic [7:0] u_tx_data,
  input  logic u_rx_valid, output logic u_rx_ready, input logic [7:0] u_rx_data
);
  localparam int BUF_BYTES = 4096 + 16;
  localparam logic [63:0] ID_VALUE = 64'h7e57_0001_c051_0001;

  // ------------------------------------------------------------------ registers
  logic [63:0] scratch0, scratch1, dma_src, dma_dst, dma_len, cycles;
  logic [31:0] stall, copies, nic_frames, uart_bytes;
  logic [63:0] ram [0:511];

  // ------------------------------------------------------------------ register write port
  logic wr_busy;   // B pending
  assign r_awready = rst_n && !wr_busy && r_wvalid;   // take AW and W together
  assign r_wready = rst_n && !wr_busy && r_awvalid;

  function automatic logic [63:0] merge(input logic [63:0] old, input logic [63:0] d, input logic [7:0] s);
    logic [63:0] r;
    for (int j = 0; j < 8; j++) r[j*8 +: 8] = s[j] ? d[j*8 +: 8] : old[j*8 +: 8];
    return r;
  endfunction

  logic [63:0] bw_addr, bw_cfg, br_addr, br_cfg;
  logic bw_start, br_start;
  logic [63:0] stall_new;
  assign stall_new = merge({32'b0, stall}, r_wdata, r_wstrb);
  logic start_pulse, trig_pulse;
  logic [10:0] trig_vector;
  logic [63:0] dma_ctrl;

  always_ff @(posedge clk) begin
    if (!rst_n) begin
      wr_busy <= 1'b0;
      r_bvalid <= 1'b0;
      r_bresp <= 2'b00;
      scratch0 <= '0;
      scratch1 <= '0;
      dma_src <= '0;
      dma_dst <= '0;
      dma_len <= '0;
      dma_ctrl <= '0;
      stall <= 32'd4;
      start_pulse <= 1'b0;
      trig_pulse <= 1'b0;
      trig_vector <= '0;
      bw_addr <= '0;
      bw_cfg <= '0;
      bw_start <= 1'b0;
      br_addr <= '0;
      br_cfg <= '0;
      br_start <= 1'b0;
    end else begin
      start_pulse <= 1'b0;
      trig_pulse <= 1'b0;
      bw_start <= 1'b0;
      br_start <= 1'b0;
      if (r_bvalid && r_bready) begin
        r_bvalid <= 1'b0;
        wr_busy <= 1'b0;
      end
      if (r_awvalid && r_awready) begin
        wr_busy <= 1'b1;
        r_bvalid <= 1'b1;
        r_bresp <= 2'b00;
        if (r_awuser == 3'd1) begin
          ram[r_awaddr[11:3]] <= merge(ram[r_awaddr[11:3]], r_wdata, r_wstrb);
        end else if (r_awuser == 3'd0) begin
          case (r_awaddr[11:3])
            9'h001: scratch0 <= merge(scratch0, r_wdata, r_wstrb);
            9'h002: scratch1 <= merge(scratch1, r_wdata, r_wstrb);
            9'h020: dma_src <= merge(dma_src, r_wdata, r_wstrb);
            9'h021: dma_dst <= merge(dma_dst, r_wdata, r_wstrb);
            9'h022: dma_len <= merge(dma_len, r_wdata, r_wstrb);
            9'h023: begin
              dma_ctrl <= merge(dma_ctrl, r_wdata, r_wstrb);
              start_pulse <= r_wstrb[0] && r_wdata[0];
            end
            9'h02a: bw_addr <= merge(bw_addr, r_wdata, r_wstrb);
            9'h02c: br_addr <= merge(br_addr, r_wdata, r_wstrb);
            9'h02d: begin
              br_cfg <= merge(br_cfg, r_wdata, r_wstrb);
              br_start <= r_wstrb[4] && r_wdata[32];
            end
            9'h02b: begin
              bw_cfg <= merge(bw_cfg, r_wdata, r_wstrb);
              bw_start <= r_wstrb[4] && r_wdata[32];
            end
            9'h025: begin
              trig_pulse <= 1'b1;
              trig_vector <= r_wdata[10:0];
            end
            9'h028: stall <= stall_new[31:0];
            default: ;
          endcase
        end else begin
          r_bresp <= 2'b11;
        end
      end
    end
  end

  // ------------------------------------------------------------------ register read port
  logic rd_busy;
  logic [31:0] rd_wait;
  logic [63:0] rd_addr_q;
  logic [2:0] rd_user_q;
  logic [63:0] status_word;
  assign r_arready = rst_n && !rd_busy;
  assign r_rlast = 1'b1;

  function automatic logic [63:0] reg_read(input logic [11:3] a);
    case (a)
      9'h000: return ID_VALUE;
      9'h001: return scratch0;
      9'h002: return scratch1;
      9'h020: return dma_src;
      9'h021: return dma_dst;
      9'h022: return dma_len;
      9'h024: return status_word;
      9'h026: return {uart_bytes, nic_frames};
      9'h027: return cycles;
      9'h028: return {32'b0, stall};
      9'h029: return 64'h5105;
      9'h02a: return bw_addr;
      9'h02b: return {29'b0, bw_done, bw_busy, 1'b0, bw_cfg[31:0]};
      9'h02c: return br_addr;
      9'h02d: return {28'b0, br_err, br_done, br_busy || br_queued, 1'b0, br_cfg[31:0]};
      9'h02e: return br_sum;
      9'h02f: return dma_cycles;
      default: return 64'h0;
    endcase
  endfunction

  always_ff @(posedge clk) begin
    if (!rst_n) begin
      rd_busy <= 1'b0;
      r_rvalid <= 1'b0;
      rd_wait <= '0;
    end else begin
      if (r_arvalid && r_arready) begin
        rd_busy <= 1'b1;
        rd_addr_q <= r_araddr;
        rd_user_q <= r_aruser;
        rd_wait <= (r_aruser == 3'd0 && r_araddr[11:3] == 9'h029) ? stall : 32'd0;
      end else if (rd_busy && !r_rvalid) begin
        if (rd_wait != 0) begin
          rd_wait <= rd_wait - 1;
        end else begin
          r_rvalid <= 1'b1;
          if (rd_user_q == 3'd1) begin
            r_rdata <= ram[rd_addr_q[11:3]];
            r_rresp <= 2'b00;
          end else if (rd_user_q == 3'd0) begin
            r_rdata <= reg_read(rd_addr_q[11:3]);
            r_rresp <= (rd_addr_q[11:3] == 9'h1fc) ? 2'b10 : 2'b00;
          end else begin
            r_rdata <= '0;
            r_rresp <= 2'b11;
          end
        end
      end else if (r_rvalid && r_rready) begin
        r_rvalid <= 1'b0;
        rd_busy <= 1'b0;
      end
    end
  end

  // ------------------------------------------------------------------ DMA copy engine
  typedef enum logic [2:0] {C_IDLE, C_READ, C_AW, C_W, C_B, C_IRQ} cstate_t;
  cstate_t cst;
  logic [7:0] buffer [0:BUF_BYTES-1];
  logic [63:0] rd_next, rd_end, wr_next, wr_end, src_q, dst_q;
  logic [31:0] len_q, buf_fill;
  logic [8:0] max_beats;
  logic [15:0] id_busy;
  logic [3:0] next_id;  // store and forward: 0..3 (4 in flight); streaming: 0..15
  logic [31:0] id_base [0:15];
  logic [8:0] id_cnt [0:15];
  logic [8:0] w_beats, w_beat;
  logic busy, done, err, irq_en_q, stream_q;
  logic [10:0] vec_q;
  logic copy_irq;
  logic [63:0] cp_start, dma_cycles;  // CYCLES when the running copy started; clocks of the last one

  assign status_word = {copies, 29'b0, err, done, busy};

  function automatic logic [8:0] burst_beats(input logic [63:0] a, input logic [63:0] e, input logic [8:0] mx);
    logic [63:0] left, to4k, n;
    left = (e - a) >> 3;
    to4k = (64'd4096 - {52'b0, a[11:0]}) >> 3;
    n = {55'b0, mx};
    if (left < n) n = left;
    if (to4k < n) n = to4k;
    return n[8:0];
  endfunction

  logic [8:0] rd_beats;
  assign rd_beats = burst_beats(rd_next, rd_end, max_beats);
  // The read channels are shared by the copy engine and the burst reader (never both busy).
  typedef enum logic [1:0] {R_IDLE, R_AR, R_R} rstate_t;
  rstate_t brst;
  logic br_busy, br_done, br_err;
  logic br_queued;  // START seen while the copy engine ran
  logic [8:0] br_beat;
  logic [63:0] br_sum;
  logic [63:0] br_a;
  logic [7:0] br_lanes;
  assign br_busy = (brst != R_IDLE);
  assign d_arid = br_busy ? AXI_ID_W'(2) : AXI_ID_W'(next_id);
  assign d_araddr = br_busy ? br_addr : rd_next;
  assign d_arlen = br_busy ? br_cfg[7:0] : 8'(rd_beats - 9'd1);
  assign d_arsize = br_busy ? br_cfg[10:8] : 3'd3;
  assign d_arburst = br_busy ? br_cfg[13:12] : 2'b01;
  // The copy engine reads in C_READ; streaming, it goes on reading while it writes.
  logic cp_arvalid, cp_ar_fire;
  assign cp_arvalid = ((cst == C_READ) || (stream_q && (cst == C_AW || cst == C_W || cst == C_B)))
                      && rd_next < rd_end && !id_busy[next_id];
  assign cp_ar_fire = cp_arvalid && d_arready;
  assign d_arvalid = (brst == R_AR) || cp_arvalid;
  assign d_rready = 1'b1;

  // Address of beat i of a burst (AXI A3.4.1) and the byte lanes it uses on the 64-bit bus.
  function automatic logic [63:0] beat_addr(input logic [63:0] addr, input logic [7:0] len,
                                            input logic [2:0] size, input logic [1:0] burst,
                                            input logic [8:0] i);
    logic [63:0] n, aligned, w, base;
    n = 64'd1 << size;
    aligned = addr & ~(n - 64'd1);
    w = n * (64'(len) + 64'd1);
    base = aligned & ~(w - 64'd1);
    case (burst)
      2'b00: return addr;
      2'b10: return base + ((aligned - base + 64'(i) * n) & (w - 64'd1));
      default: return (i == 0) ? addr : aligned + 64'(i) * n;
    endcase
  endfunction

  function automatic logic [7:0] beat_lanes(input logic [63:0] a, input logic [2:0] size);
    logic [63:0] n;
    logic [7:0] m;
    n = 64'd1 << size;
    m = '0;
    for (int j = 0; j < 8; j++)
      if (64'(j) >= {61'b0, a[2:0]} && 64'(j) < ((a & ~(n - 64'd1)) & 64'd7) + n) m[j] = 1'b1;
    return m;
  endfunction

  assign br_a = beat_addr(br_addr, br_cfg[7:0], br_cfg[10:8], br_cfg[13:12], br_beat);
  assign br_lanes = beat_lanes(br_a, br_cfg[10:8]);

  always_ff @(posedge clk) begin
    if (!rst_n) begin
      brst <= R_IDLE;
      br_queued <= 1'b0;
      br_done <= 1'b0;
      br_err <= 1'b0;
      br_beat <= '0;
      br_sum <= '0;
    end else begin
      case (brst)
        R_IDLE: if ((br_start || br_queued) && cst == C_IDLE) begin
          br_queued <= 1'b0;
          br_done <= 1'b0;
          br_err <= 1'b0;
          br_beat <= '0;
          br_sum <= '0;
          brst <= R_AR;
        end else if (br_start) begin
          br_queued <= 1'b1;
        end
        R_AR: if (d_arready) brst <= R_R;
        default: if (d_rvalid) begin
          logic [63:0] acc;
          acc = br_sum;
          for (int j = 0; j < 8; j++)
            if (br_lanes[j]) acc = acc * 64'd31 + {56'b0, d_rdata[j*8 +: 8]};
          br_sum <= acc;
          br_beat <= br_beat + 9'd1;
          if (d_rresp != 2'b00) br_err <= 1'b1;
          if (d_rlast) begin
            br_done <= 1'b1;
            brst <= R_IDLE;
          end
        end
      endcase
    end
  end

  // The write channels are shared by the copy engine and the burst writer (never both busy).
  typedef enum logic [1:0] {B_IDLE, B_AW, B_W, B_B} bstate_t;
  bstate_t bst;
  logic bw_busy, bw_done;
  logic [8:0] bw_beat;
  logic [63:0] bw_data;
  logic [7:0] bw_strb;
  assign bw_busy = (bst != B_IDLE);
  assign d_awid = bw_busy ? AXI_ID_W'(1) : '0;
  assign d_awsize = bw_busy ? bw_cfg[10:8] : 3'd3;
  assign d_awburst = bw_busy ? bw_cfg[13:12] : 2'b01;
  assign d_awvalid = (cst == C_AW) || (bst == B_AW);
  assign d_awaddr = bw_busy ? bw_addr : wr_next;
  assign d_awlen = bw_busy ? bw_cfg[7:0] : 8'(w_beats - 9'd1);
  assign d_wvalid = (cst == C_W && cp_wok) || (bst == B_W);
  assign d_wlast = bw_busy ? (bw_beat == {1'b0, bw_cfg[7:0]}) : (w_beat == w_beats - 9'd1);
  assign d_bready = (cst == C_B) || (bst == B_B);
  assign d_wdata = bw_busy ? bw_data : cp_wdata;
  assign d_wstrb = bw_busy ? bw_strb : cp_wstrb;

  // Data and strobes of the burst writer's beat: the beat's byte lanes ANDed with the mask.
  always_comb begin
    bw_strb = beat_lanes(beat_addr(bw_addr, bw_cfg[7:0], bw_cfg[10:8], bw_cfg[13:12], bw_beat), bw_cfg[10:8])
              & bw_cfg[23:16];
    for (int j = 0; j < 8; j++) bw_data[j*8 +: 8] = bw_cfg[31:24] + 8'(bw_beat) * 8'd8 + 8'(j);
  end

  always_ff @(posedge clk) begin
    if (!rst_n) begin
      bst <= B_IDLE;
      bw_done <= 1'b0;
      bw_beat <= '0;
    end else begin
      case (bst)
        B_IDLE: if (bw_start && cst == C_IDLE) begin
          bw_done <= 1'b0;
          bw_beat <= '0;
          bst <= B_AW;
        end
        B_AW: if (d_awready) bst <= B_W;
        B_W: if (d_wready) begin
          if (d_wlast) bst <= B_B;
          else bw_beat <= bw_beat + 9'd1;
        end
        default: if (d_bvalid) begin
          bw_done <= 1'b1;
          bst <= B_IDLE;
        end
      endcase
    end
  end

  // Data and strobes of the copy engine's write beat at aligned address wr_next + 8 * w_beat.
  logic [63:0] cp_wdata;
  logic [7:0] cp_wstrb;
  // Streaming: the beat may go once the buffer holds every byte it needs. cp_avail: bytes from
  // the buffer's start that have all arrived (a burst's beats arrive in order, so it is the
  // lowest end of the received beats of the bursts in flight, or everything requested if none is);
  // cp_need: the end of the current beat's bytes in the buffer.
  logic [31:0] cp_avail, cp_need;
  logic cp_wok;
  always_comb begin
    logic [63:0] a, lim;
    cp_avail = buf_fill;
    for (int i = 0; i < 16; i++)
      if (id_busy[i] && id_base[i] + {20'b0, id_cnt[i], 3'b000} < cp_avail)
        cp_avail = id_base[i] + {20'b0, id_cnt[i], 3'b000};
    a = wr_next + {52'b0, w_beat, 3'b000};
    lim = a + 64'd8;
    if (dst_q + {32'b0, len_q} < lim) lim = dst_q + {32'b0, len_q};
    cp_need = 32'({61'b0, src_q[2:0]} + lim - dst_q);
    cp_wok = !stream_q || cp_need <= cp_avail;
  end
  always_comb begin
    logic [63:0] a, d;
    logic [31:0] idx;
    a = wr_next + {52'b0, w_beat, 3'b000};
    cp_wdata = '0;
    cp_wstrb = '0;
    for (int j = 0; j < 8; j++) begin
      d = a + 64'(j);
      idx = 32'(src_q[2:0]) + 32'(d - dst_q);
      if (d >= dst_q && d < dst_q + {32'b0, len_q} && idx < BUF_BYTES) begin
        cp_wdata[j*8 +: 8] = buffer[idx[12:0]];
        cp_wstrb[j] = 1'b1;
      end
    end
  end

  always_ff @(posedge clk) begin
    if (!rst_n) begin
      cst <= C_IDLE;
      busy <= 1'b0;
      done <= 1'b0;
      err <= 1'b0;
      copies <= '0;
      id_busy <= '0;
      next_id <= '0;
      stream_q <= 1'b0;
      copy_irq <= 1'b0;
      dma_cycles <= '0;
    end else begin
      // R beats land at their burst's buffer offset, whatever order the IDs complete in.
      if (d_rvalid && !br_busy) begin
        logic [3:0] rid;
        logic [31:0] off;
        rid = d_rid[3:0];
        off = id_base[rid] + {20'b0, id_cnt[rid], 3'b000};
        for (int j = 0; j < 8; j++) begin
          if (off + 32'(j) < BUF_BYTES) buffer[13'(off + 32'(j))] <= d_rdata[j*8 +: 8];
        end
        id_cnt[rid] <= id_cnt[rid] + 9'd1;
        if (d_rresp != 2'b00) err <= 1'b1;
        if (d_rlast) id_busy[rid] <= 1'b0;
      end
      if (cp_ar_fire) begin
        id_busy[next_id] <= 1'b1;
        id_base[next_id] <= buf_fill;
        id_cnt[next_id] <= '0;
        buf_fill <= buf_fill + {20'b0, rd_beats, 3'b000};
        rd_next <= rd_next + {52'b0, rd_beats, 3'b000};
        next_id <= stream_q ? next_id + 4'd1 : {2'b0, next_id[1:0] + 2'd1};
      end
      copy_irq <= 1'b0;
      case (cst)
        C_IDLE: if (start_pulse && !bw_busy && !br_busy && !br_queued) begin
          done <= 1'b0;
          err <= 1'b0;
          cp_start <= cycles;
          src_q <= dma_src;
          dst_q <= dma_dst;
          len_q <= dma_len[31:0];
          irq_en_q <= dma_ctrl[1];
          stream_q <= dma_ctrl[2];
          if (!dma_ctrl[2]) next_id <= {2'b0, next_id[1:0]};  // IDs 0..3 (after a streaming copy)
          vec_q <= dma_ctrl[26:16];
          max_beats <= (dma_len[47:32] == 0) ? 9'd16 : (dma_len[47:32] > 256 ? 9'd256 : dma_len[40:32]);
          if (dma_len[31:0] == 0 || dma_len[31:0] > 4096) begin
            err <= 1'b1;
            cst <= C_IRQ;
          end else begin
            busy <= 1'b1;
            rd_next <= {dma_src[63:3], 3'b000};
            rd_end <= (dma_src + {32'b0, dma_len[31:0]} + 64'd7) & ~64'd7;
            buf_fill <= '0;
            cst <= C_READ;
          end
        end
        C_READ: begin
          // Store and forward: write once every read has completed; streaming: at once (the
          // reads go on, above).
          if (stream_q || (!cp_ar_fire && rd_next >= rd_end && id_busy == '0 && !d_rvalid)) begin
            wr_next <= {dst_q[63:3], 3'b000};
            wr_end <= (dst_q + {32'b0, len_q} + 64'd7) & ~64'd7;
            w_beats <= burst_beats({dst_q[63:3], 3'b000}, (dst_q + {32'b0, len_q} + 64'd7) & ~64'd7, max_beats);
            w_beat <= '0;
            cst <= C_AW;
          end
        end
        C_AW: if (d_awready) cst <= C_W;
        C_W: if (d_wvalid && d_wready) begin
          if (d_wlast) cst <= C_B;
          else w_beat <= w_beat + 9'd1;
        end
        C_B: if (d_bvalid) begin
          logic [63:0] nxt;
          if (d_bresp != 2'b00) err <= 1'b1;
          nxt = wr_next + {52'b0, w_beats, 3'b000};
          if (nxt >= wr_end) begin
            cst <= C_IRQ;
          end else begin
            wr_next <= nxt;
            w_beats <= burst_beats(nxt, wr_end, max_beats);
            w_beat <= '0;
            cst <= C_AW;
          end
        end
        default: begin  // C_IRQ: completion (after the last write response)
          busy <= 1'b0;
          done <= 1'b1;
          copies <= copies + 32'd1;
          dma_cycles <= cycles - cp_start;
          copy_irq <= irq_en_q;
          cst <= C_IDLE;
        end
      endcase
    end
  end

  // ------------------------------------------------------------------ MSI-X requests
  // Two sources (copy completion, IRQ_TRIGGER); each is latched until the shell takes it.
  logic copy_pend, trig_pend;
  logic [10:0] trig_vec_q;
  assign irq_valid = copy_pend || trig_pend;
  assign irq_vector = copy_pend ? vec_q : trig_vec_q;
  always_ff @(posedge clk) begin
    if (!rst_n) begin
      copy_pend <= 1'b0;
      trig_pend <= 1'b0;
    end else begin
      if (irq_valid && irq_ready) begin
        if (copy_pend) copy_pend <= 1'b0;
        else trig_pend <= 1'b0;
      end
      if (copy_irq) copy_pend <= 1'b1;
      if (trig_pulse) begin
        trig_pend <= 1'b1;
        trig_vec_q <= trig_vector;
      end
    end
  end

  // ------------------------------------------------------------------ NIC loopback
  assign tx_tdata = rx_tdata;
  assign tx_tkeep = rx_tkeep;
  assign tx_tlast = rx_tlast;
  assign tx_tvalid = rx_tvalid;
  assign rx_tready = tx_tready;

  // ------------------------------------------------------------------ UART banner + echo
  localparam int BANNER_LEN = 17;
  localparam logic [8*BANNER_LEN-1:0] BANNER = "cosim test ready\n";
  logic [4:0] banner_idx;
  logic banner_done;
  assign banner_done = (banner_idx == 5'(BANNER_LEN));
  assign u_tx_valid = banner_done ? u_rx_valid : 1'b1;
  assign u_tx_data = banner_done ? u_rx_data : BANNER[8*(BANNER_LEN-1-int'(banner_idx)) +: 8];
  assign u_rx_ready = banner_done && u_tx_ready;

  always_ff @(posedge clk) begin
    if (!rst_n) begin
      banner_idx <= '0;
      nic_frames <= '0;
      uart_bytes <= '0;
      cycles <= '0;
    end else begin
      cycles <= cycles + 64'd1;
      if (!banner_done && u_tx_ready) banner_idx <= banner_idx + 5'd1;
      if (banner_done && u_rx_valid && u_tx_ready) uart_bytes <= uart_bytes + 32'd1;
      if (rx_tvalid && tx_tready && rx_tlast) nic_frames <= nic_frames + 32'd1;
    end
  end

  // ------------------------------------------------------------------ idle sleep
  // Busy while an engine, a register access, the banner or an interrupt is in progress (the
  // free-running CYCLES counter does not count: it stops while the simulation sleeps).
  cosim_busy u_busy (
    .clk(clk),
    .busy(!rst_n || !banner_done || wr_busy || rd_busy || cst != C_IDLE || br_busy || br_queued || br_start
          || bw_busy || bw_start || start_pulse || trig_pulse || irq_valid)
  );

  logic unused;
  assign unused = ^{d_bid, r_awaddr[63:12], r_awaddr[2:0], rd_addr_q[2:0], d_rid, stall_new[63:32], r_araddr[63:12], rd_addr_q[63:12], dma_ctrl, rd_end, src_q[63:3]};
endmodule
