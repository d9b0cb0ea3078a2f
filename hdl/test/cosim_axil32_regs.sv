// cosim_axil32_regs: the 32-bit AXI-Lite register slave behind cosim_axil32 in the adapter's
// test (cosim_axil32_top, host-model/tests/axil32.rs). Every ready and every response valid is
// gated by bits of a free-running LFSR, so the adapter sees random back-pressure on all five
// channels, and AW and W are accepted independently of each other.
//
// Address map (offsets within a 4 KiB BAR; a*user = BAR index selects the bank):
//   0x00..0x3C  16 registers per bank (bank = bit 0 of a*user: BAR0 and BAR1 each have their own), byte strobes
//               honoured; register 14 (0x38, a low word) answers SLVERR to reads and writes (nothing written)
//   0x80 WCOUNT  AXI-Lite write transfers to the banks     0x84 RCOUNT  read transfers to the banks
//   0x88 WLOG0   last bank write                            0x8C WLOG1   the bank write before it
//   0x90 RLOG0   last bank read                             0x94 RLOG1   the bank read before it
//               log word: [11:0] AXI-Lite address, [18:16] a*user (BAR), [27:24] write strobes
//   anything else: DECERR. Reads and writes of 0x80..0x94 are neither counted nor logged.
module cosim_axil32_regs (
  input  logic        clk,
  input  logic        rst_n,
  input  logic [11:0] awaddr,
  input  logic [2:0]  awuser,
  input  logic        awvalid,
  output logic        awready,
  input  logic [31:0] wdata,
  input  logic [3:0]  wstrb,
  input  logic        wvalid,
  output logic        wready,
  output logic [1:0]  bresp,
  output logic        bvalid,
  input  logic        bready,
  input  logic [11:0] araddr,
  input  logic [2:0]  aruser,
  input  logic        arvalid,
  output logic        arready,
  output logic [31:0] rdata,
  output logic [1:0]  rresp,
  output logic        rvalid,
  input  logic        rready
);
  localparam logic [1:0] OKAY = 2'b00, SLVERR = 2'b10, DECERR = 2'b11;

  logic [15:0] lfsr;  // x^16 + x^14 + x^13 + x^11 + 1, Galois form
  always_ff @(posedge clk) begin
    if (!rst_n) lfsr <= 16'hACE1;
    else lfsr <= {1'b0, lfsr[15:1]} ^ (lfsr[0] ? 16'hB400 : 16'h0000);
  end

  logic [31:0] bank [2][16];
  logic [31:0] wcount, rcount, wlog0, wlog1, rlog0, rlog1;

  // Writes: AW and W each taken when its LFSR bit allows, the write done when both are in.
  logic        aw_have, w_have;
  logic [11:0] aw_a;
  logic [2:0]  aw_u;
  logic [31:0] w_d;
  logic [3:0]  w_s;
  assign awready = !aw_have && !bvalid && lfsr[0];
  assign wready  = !w_have && !bvalid && lfsr[3];

  // Reads: AR taken when allowed, answered when another bit allows.
  logic        ar_have;
  logic [11:0] ar_a;
  logic [2:0]  ar_u;
  assign arready = !ar_have && !rvalid && lfsr[7];

  always_ff @(posedge clk) begin
    if (!rst_n) begin
      aw_have <= 1'b0; w_have <= 1'b0; bvalid <= 1'b0; bresp <= OKAY;
      ar_have <= 1'b0; rvalid <= 1'b0; rresp <= OKAY; rdata <= '0;
      aw_a <= '0; aw_u <= '0; w_d <= '0; w_s <= '0; ar_a <= '0; ar_u <= '0;
      wcount <= '0; rcount <= '0; wlog0 <= '0; wlog1 <= '0; rlog0 <= '0; rlog1 <= '0;
      for (int b = 0; b < 2; b++) for (int i = 0; i < 16; i++) bank[b][i] <= '0;
    end else begin
      if (awvalid && awready) begin aw_have <= 1'b1; aw_a <= awaddr; aw_u <= awuser; end
      if (wvalid && wready) begin w_have <= 1'b1; w_d <= wdata; w_s <= wstrb; end
      if (aw_have && w_have && !bvalid && lfsr[11]) begin
        aw_have <= 1'b0; w_have <= 1'b0; bvalid <= 1'b1;
        if (aw_a < 12'h40) begin
          wcount <= wcount + 32'd1;
          wlog1 <= wlog0;
          wlog0 <= {4'b0, w_s, 5'b0, aw_u, 4'b0, aw_a};
          if (aw_a[5:2] == 4'd14) bresp <= SLVERR;
          else begin
            bresp <= OKAY;
            for (int i = 0; i < 4; i++)
              if (w_s[i]) bank[aw_u[0]][aw_a[5:2]][8*i +: 8] <= w_d[8*i +: 8];
          end
        end else begin
          bresp <= DECERR;
        end
      end
      if (bvalid && bready) bvalid <= 1'b0;

      if (arvalid && arready) begin ar_have <= 1'b1; ar_a <= araddr; ar_u <= aruser; end
      if (ar_have && !rvalid && lfsr[13]) begin
        ar_have <= 1'b0; rvalid <= 1'b1; rresp <= OKAY; rdata <= '0;
        if (ar_a < 12'h40) begin
          rcount <= rcount + 32'd1;
          rlog1 <= rlog0;
          rlog0 <= {13'b0, ar_u, 4'b0, ar_a};
          if (ar_a[5:2] == 4'd14) rresp <= SLVERR;
          else rdata <= bank[ar_u[0]][ar_a[5:2]];
        end else begin
          case (ar_a[11:2])
            10'h20: rdata <= wcount;
            10'h21: rdata <= rcount;
            10'h22: rdata <= wlog0;
            10'h23: rdata <= wlog1;
            10'h24: rdata <= rlog0;
            10'h25: rdata <= rlog1;
            default: rresp <= DECERR;
          endcase
        end
      end
      if (rvalid && rready) rvalid <= 1'b0;
    end
  end

endmodule
