// cosim_axil32: the shell's 64-bit MMIO master (m_axi_* of cosim_pcie_ep) as a 32-bit
// AXI-Lite master, for register blocks and IP with a 32-bit AXI-Lite control port.
// See docs/hdl-endpoint.md, "32-bit AXI-Lite registers".
//
// - An access of 1, 2 or 4 bytes becomes one AXI-Lite transfer on the 32-bit half it lies in;
//   an 8-byte access (or any access that touches both halves) becomes two transfers, low word
//   first, and its response is the worse of the two (DECERR > SLVERR > OKAY).
// - Writes pick the halves from the 64-bit beat's strobes, reads from address and size (reads
//   have no strobes). A write without strobes is answered OKAY without a transfer.
// - AXI-Lite addresses are 4-byte aligned; the byte lanes of a write are in m_axil_wstrb. Read
//   data goes back on the 64-bit lanes its address selects (the other half reads as 0).
// - Bursts (AxLEN > 0, never issued by cosim_pcie_ep) are answered SLVERR without a transfer:
//   a write's W beats are drained up to WLAST, a read gets AxLEN+1 SLVERR beats.
// - The BAR index (AxUSER) comes out unchanged on m_axil_awuser/aruser, valid with the AW/AR
//   channel: decode your BARs from it.
// - One write and one read can be in progress at once, independently; every channel honours its
//   ready, on both sides.
module cosim_axil32 #(
  parameter int ADDR_W = 32  // AXI-Lite address width, 4..64 (the low bits of the 64-bit address)
) (
  input  logic              clk,
  input  logic              rst_n,
  // From cosim_pcie_ep's m_axi_* (this module is the slave)
  input  logic [63:0]       s_axi_awaddr,
  input  logic [7:0]        s_axi_awlen,
  input  logic [2:0]        s_axi_awsize,
  input  logic [1:0]        s_axi_awburst,
  input  logic [2:0]        s_axi_awuser,
  input  logic              s_axi_awvalid,
  output logic              s_axi_awready,
  input  logic [63:0]       s_axi_wdata,
  input  logic [7:0]        s_axi_wstrb,
  input  logic              s_axi_wlast,
  input  logic              s_axi_wvalid,
  output logic              s_axi_wready,
  output logic [1:0]        s_axi_bresp,
  output logic              s_axi_bvalid,
  input  logic              s_axi_bready,
  input  logic [63:0]       s_axi_araddr,
  input  logic [7:0]        s_axi_arlen,
  input  logic [2:0]        s_axi_arsize,
  input  logic [1:0]        s_axi_arburst,
  input  logic [2:0]        s_axi_aruser,
  input  logic              s_axi_arvalid,
  output logic              s_axi_arready,
  output logic [63:0]       s_axi_rdata,
  output logic [1:0]        s_axi_rresp,
  output logic              s_axi_rlast,
  output logic              s_axi_rvalid,
  input  logic              s_axi_rready,
  // To the 32-bit AXI-Lite slave
  output logic [ADDR_W-1:0] m_axil_awaddr,
  output logic [2:0]        m_axil_awprot,
  output logic [2:0]        m_axil_awuser,  // BAR index (sideband, not AXI-Lite)
  output logic              m_axil_awvalid,
  input  logic              m_axil_awready,
  output logic [31:0]       m_axil_wdata,
  output logic [3:0]        m_axil_wstrb,
  output logic              m_axil_wvalid,
  input  logic              m_axil_wready,
  input  logic [1:0]        m_axil_bresp,
  input  logic              m_axil_bvalid,
  output logic              m_axil_bready,
  output logic [ADDR_W-1:0] m_axil_araddr,
  output logic [2:0]        m_axil_arprot,
  output logic [2:0]        m_axil_aruser,  // BAR index (sideband, not AXI-Lite)
  output logic              m_axil_arvalid,
  input  logic              m_axil_arready,
  input  logic [31:0]       m_axil_rdata,
  input  logic [1:0]        m_axil_rresp,
  input  logic              m_axil_rvalid,
  output logic              m_axil_rready
);
  localparam logic [1:0] OKAY = 2'b00, SLVERR = 2'b10;

  // AXI responses are ordered by severity as numbers (OKAY 0, EXOKAY 1, SLVERR 2, DECERR 3).
  function automatic logic [1:0] worst(input logic [1:0] a, input logic [1:0] b);
    return (a > b) ? a : b;
  endfunction

  // ------------------------------------------------------------------------------------ writes
  typedef enum logic [2:0] {W_COLLECT, W_DECIDE, W_DRAIN, W_SEND, W_WAIT_B, W_RESP} wstate_t;
  wstate_t wr_st;
  logic              aw_full, w_full;   // the 64-bit AW / W beat has been taken
  logic [ADDR_W-1:3] aw_addr;  // 8-byte aligned
  logic [2:0]        aw_user;
  logic              aw_burst;          // AWLEN > 0
  logic [63:0]       w_data;
  logic [7:0]        w_strb;
  logic              w_last;
  logic              w_hi;              // the half being sent: 0 low word, 1 high word
  logic              aw_sent, w_sent;   // this half's AXI-Lite AW / W handshakes are done
  logic [1:0]        w_resp;

  // AW and W are taken independently (AXI lets W come first); the shell presents them together.
  assign s_axi_awready = (wr_st == W_COLLECT) && !aw_full;
  assign s_axi_wready  = ((wr_st == W_COLLECT) && !w_full) || (wr_st == W_DRAIN);
  assign s_axi_bvalid  = (wr_st == W_RESP);
  assign s_axi_bresp   = w_resp;

  assign m_axil_awaddr  = {aw_addr, w_hi, 2'b00};
  assign m_axil_awprot  = 3'b000;
  assign m_axil_awuser  = aw_user;
  assign m_axil_awvalid = (wr_st == W_SEND) && !aw_sent;
  assign m_axil_wdata   = w_hi ? w_data[63:32] : w_data[31:0];
  assign m_axil_wstrb   = w_hi ? w_strb[7:4] : w_strb[3:0];
  assign m_axil_wvalid  = (wr_st == W_SEND) && !w_sent;
  assign m_axil_bready  = (wr_st == W_WAIT_B);

  always_ff @(posedge clk) begin
    if (!rst_n) begin
      wr_st <= W_COLLECT;
      aw_full <= 1'b0; w_full <= 1'b0;
      aw_addr <= '0; aw_user <= '0; aw_burst <= 1'b0;
      w_data <= '0; w_strb <= '0; w_last <= 1'b0;
      w_hi <= 1'b0; aw_sent <= 1'b0; w_sent <= 1'b0; w_resp <= OKAY;
    end else begin
      case (wr_st)
        W_COLLECT: begin
          if (s_axi_awvalid && s_axi_awready) begin
            aw_full <= 1'b1;
            aw_addr <= s_axi_awaddr[ADDR_W-1:3];
            aw_user <= s_axi_awuser;
            aw_burst <= (s_axi_awlen != 8'd0);
          end
          if (s_axi_wvalid && s_axi_wready) begin
            w_full <= 1'b1;
            w_data <= s_axi_wdata;
            w_strb <= s_axi_wstrb;
            w_last <= s_axi_wlast;
          end
          // Decide a clock later, from registers only, so both orders of AW and W look alike.
          if ((aw_full || s_axi_awvalid) && (w_full || s_axi_wvalid)) wr_st <= W_DECIDE;
        end
        W_DECIDE: begin
          w_resp <= OKAY;
          aw_sent <= 1'b0; w_sent <= 1'b0;
          w_hi <= (w_strb[3:0] == 4'b0);
          if (aw_burst) begin
            w_resp <= SLVERR;
            wr_st <= w_last ? W_RESP : W_DRAIN;
          end else if (w_strb == 8'b0) begin
            wr_st <= W_RESP;
          end else begin
            wr_st <= W_SEND;
          end
        end
        W_DRAIN: if (s_axi_wvalid && s_axi_wlast) wr_st <= W_RESP;
        W_SEND: begin
          if (m_axil_awvalid && m_axil_awready) aw_sent <= 1'b1;
          if (m_axil_wvalid && m_axil_wready) w_sent <= 1'b1;
          if ((aw_sent || m_axil_awready) && (w_sent || m_axil_wready)) wr_st <= W_WAIT_B;
        end
        W_WAIT_B: if (m_axil_bvalid) begin
          w_resp <= worst(w_resp, m_axil_bresp);
          if (!w_hi && (w_strb[7:4] != 4'b0)) begin
            w_hi <= 1'b1;
            aw_sent <= 1'b0; w_sent <= 1'b0;
            wr_st <= W_SEND;
          end else begin
            wr_st <= W_RESP;
          end
        end
        W_RESP: if (s_axi_bready) begin
          aw_full <= 1'b0; w_full <= 1'b0;
          wr_st <= W_COLLECT;
        end
        default: wr_st <= W_COLLECT;
      endcase
    end
  end

  // ------------------------------------------------------------------------------------- reads
  typedef enum logic [2:0] {R_IDLE, R_SEND, R_WAIT, R_RESP, R_ERR} rstate_t;
  rstate_t rd_st;
  logic [ADDR_W-1:3] ar_addr;  // 8-byte aligned
  logic [2:0]        ar_user;
  logic              r_hi, r_need_hi;
  logic [63:0]       r_data;
  logic [1:0]        r_resp;
  logic [7:0]        r_beats;           // SLVERR beats still to send for a refused burst
  // The halves an access of 2^size bytes at byte lane addr[2:0] touches (sizes above 8 bytes
  // cannot occur on a 64-bit bus; they are clipped to 8).
  logic [3:0]        ar_end;            // last byte lane + 1
  assign ar_end = {1'b0, s_axi_araddr[2:0]} + ((s_axi_arsize >= 3'd3) ? 4'd8 : (4'd1 << s_axi_arsize));

  assign s_axi_arready = (rd_st == R_IDLE);
  assign s_axi_rvalid  = (rd_st == R_RESP) || (rd_st == R_ERR);
  assign s_axi_rdata   = r_data;
  assign s_axi_rresp   = (rd_st == R_ERR) ? SLVERR : r_resp;
  assign s_axi_rlast   = (rd_st == R_RESP) || (r_beats == 8'd0);

  assign m_axil_araddr  = {ar_addr, r_hi, 2'b00};
  assign m_axil_arprot  = 3'b000;
  assign m_axil_aruser  = ar_user;
  assign m_axil_arvalid = (rd_st == R_SEND);
  assign m_axil_rready  = (rd_st == R_WAIT);

  always_ff @(posedge clk) begin
    if (!rst_n) begin
      rd_st <= R_IDLE;
      ar_addr <= '0; ar_user <= '0;
      r_hi <= 1'b0; r_need_hi <= 1'b0; r_data <= '0; r_resp <= OKAY; r_beats <= '0;
    end else begin
      case (rd_st)
        R_IDLE: if (s_axi_arvalid) begin
          ar_addr <= s_axi_araddr[ADDR_W-1:3];
          ar_user <= s_axi_aruser;
          r_data <= '0;
          r_resp <= OKAY;
          r_hi <= s_axi_araddr[2];
          r_need_hi <= (ar_end > 4'd4);
          r_beats <= s_axi_arlen;
          rd_st <= (s_axi_arlen != 8'd0) ? R_ERR : R_SEND;
        end
        R_SEND: if (m_axil_arready) rd_st <= R_WAIT;
        R_WAIT: if (m_axil_rvalid) begin
          r_resp <= worst(r_resp, m_axil_rresp);
          if (r_hi) r_data[63:32] <= m_axil_rdata;
          else r_data[31:0] <= m_axil_rdata;
          if (!r_hi && r_need_hi) begin
            r_hi <= 1'b1;
            rd_st <= R_SEND;
          end else begin
            rd_st <= R_RESP;
          end
        end
        R_RESP: if (s_axi_rready) rd_st <= R_IDLE;
        R_ERR: if (s_axi_rready) begin
          if (r_beats == 8'd0) rd_st <= R_IDLE;
          else r_beats <= r_beats - 8'd1;
        end
        default: rd_st <= R_IDLE;
      endcase
    end
  end

  // The upper address bits (beyond ADDR_W), AxSIZE of writes (the strobes say it all) and the
  // burst type (only single beats are passed on) are not needed.
  logic unused;
  assign unused = ^{s_axi_awaddr, s_axi_awsize, s_axi_awburst, s_axi_araddr, s_axi_arburst};
endmodule
