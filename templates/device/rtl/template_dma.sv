// template_dma: one transfer: read LEN bytes from SRC, write each 64-bit word inverted to DST.
// Bursts of up to MAX_BEATS beats go through a small buffer: read a burst, write it, repeat.
// A burst never crosses a 4 KiB boundary on either side (AXI forbids it). The first error
// response ends the transfer: the rest of that read burst is drained (AXI has no way to cancel
// it) and nothing more is written.
module template_dma #(
  parameter int MAX_BEATS = 16,  // burst length limit and buffer depth, a power of two, 2..256
  parameter int ID_W = 4
) (
  input  logic            clk,
  input  logic            rst_n,
  // From the registers: start pulse and its operands, checked there (8-byte aligned, LEN/8 words)
  input  logic            start,
  input  logic [63:0]     src,
  input  logic [63:0]     dst,
  input  logic [9:0]      words,    // 1..512
  output logic            done,     // one-cycle pulse after the last write response
  output logic            err,      // with done: a read or write got an error response
  output logic [31:0]     sum,      // of the 32-bit words read, valid with done
  // AXI4 master to the shell's s_axi_* (guest memory)
  output logic [ID_W-1:0] m_axi_awid,
  output logic [63:0]     m_axi_awaddr,
  output logic [7:0]      m_axi_awlen,
  output logic [2:0]      m_axi_awsize,
  output logic [1:0]      m_axi_awburst,
  output logic            m_axi_awvalid,
  input  logic            m_axi_awready,
  output logic [63:0]     m_axi_wdata,
  output logic [7:0]      m_axi_wstrb,
  output logic            m_axi_wlast,
  output logic            m_axi_wvalid,
  input  logic            m_axi_wready,
  input  logic [ID_W-1:0] m_axi_bid,
  input  logic [1:0]      m_axi_bresp,
  input  logic            m_axi_bvalid,
  output logic            m_axi_bready,
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
  localparam int BW = $clog2(MAX_BEATS + 1);  // wide enough to hold MAX_BEATS itself
  typedef enum logic [2:0] {IDLE, PLAN, READ_ADDR, READ_DATA, WRITE, WRITE_RESP, FINISH} state_t;
  state_t state;

  logic [63:0]   rd_addr, wr_addr;
  logic [9:0]    left;                // words still to copy
  logic [BW-1:0] beats, idx;          // this burst's length, the current beat
  logic          aw_done;
  logic [63:0]   buffer [MAX_BEATS];

  // Words up to the next 4 KiB boundary (1..512) from each side; the burst is the smallest of
  // those, the words left and MAX_BEATS.
  logic [9:0] to_4k_rd, to_4k_wr, n;
  assign to_4k_rd = 10'(11'd512 - {2'b0, rd_addr[11:3]});
  assign to_4k_wr = 10'(11'd512 - {2'b0, wr_addr[11:3]});
  always_comb begin
    n = left;
    if (to_4k_rd < n) n = to_4k_rd;
    if (to_4k_wr < n) n = to_4k_wr;
    if (10'(MAX_BEATS) < n) n = 10'(MAX_BEATS);
  end

  assign m_axi_arid    = '0;
  assign m_axi_araddr  = rd_addr;
  assign m_axi_arlen   = 8'(beats) - 8'd1;
  assign m_axi_arsize  = 3'd3;        // 8 bytes per beat
  assign m_axi_arburst = 2'b01;       // INCR
  assign m_axi_arvalid = (state == READ_ADDR);
  assign m_axi_rready  = (state == READ_DATA);

  // AW and W are offered together: AXI lets a slave wait for both before it accepts either.
  assign m_axi_awid    = '0;
  assign m_axi_awaddr  = wr_addr;
  assign m_axi_awlen   = 8'(beats) - 8'd1;
  assign m_axi_awsize  = 3'd3;
  assign m_axi_awburst = 2'b01;
  assign m_axi_awvalid = (state == WRITE) && !aw_done;
  assign m_axi_wdata   = ~buffer[idx[BW-2:0]];
  assign m_axi_wstrb   = 8'hFF;
  assign m_axi_wlast   = (idx == beats - 1'b1);
  assign m_axi_wvalid  = (state == WRITE) && (idx < beats);
  assign m_axi_bready  = (state == WRITE_RESP);

  assign done = (state == FINISH);

  always_ff @(posedge clk) begin
    if (!rst_n) begin
      state <= IDLE;
      rd_addr <= '0; wr_addr <= '0; left <= '0; beats <= '0; idx <= '0; aw_done <= 1'b0;
      err <= 1'b0; sum <= '0;
    end else begin
      case (state)
        IDLE: if (start) begin
          rd_addr <= src; wr_addr <= dst; left <= words;
          err <= 1'b0; sum <= '0;
          state <= PLAN;
        end
        // A clock to size the burst, so that ARLEN is stable while ARVALID is high.
        PLAN: begin
          beats <= BW'(n);
          idx <= '0;
          state <= READ_ADDR;
        end
        READ_ADDR: if (m_axi_arready) state <= READ_DATA;
        READ_DATA: if (m_axi_rvalid) begin
          buffer[idx[BW-2:0]] <= m_axi_rdata;
          sum <= sum + m_axi_rdata[31:0] + m_axi_rdata[63:32];
          if (m_axi_rresp != 2'b00) err <= 1'b1;
          idx <= idx + 1'b1;
          if (m_axi_rlast) begin
            idx <= '0;
            aw_done <= 1'b0;
            state <= (err || m_axi_rresp != 2'b00) ? FINISH : WRITE;
          end
        end
        WRITE: begin
          if (m_axi_awvalid && m_axi_awready) aw_done <= 1'b1;
          if (m_axi_wvalid && m_axi_wready) idx <= idx + 1'b1;
          if ((aw_done || m_axi_awready) && (idx == beats || (m_axi_wready && m_axi_wlast)))
            state <= WRITE_RESP;
        end
        WRITE_RESP: if (m_axi_bvalid) begin
          rd_addr <= rd_addr + (64'(beats) << 3);
          wr_addr <= wr_addr + (64'(beats) << 3);
          left <= left - 10'(beats);
          if (m_axi_bresp != 2'b00) begin
            err <= 1'b1;
            state <= FINISH;
          end else begin
            state <= (left == 10'(beats)) ? FINISH : PLAN;
          end
        end
        FINISH: state <= IDLE;
        default: state <= IDLE;
      endcase
    end
  end

  // One transfer at a time with ID 0: the response IDs carry nothing new.
  logic unused;
  assign unused = ^{m_axi_bid, m_axi_rid};
endmodule
