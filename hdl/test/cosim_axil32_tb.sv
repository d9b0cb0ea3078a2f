// cosim_axil32_tb: what the shell never sends to cosim_axil32, in a plain Verilator testbench
// (no shell, no host; make test-template): bursts (answered SLVERR, no AXI-Lite transfer), W
// before AW, and a master that holds BREADY/RREADY low. The slave is cosim_axil32_regs (random
// back-pressure); its counters (0x80 WCOUNT, 0x84 RCOUNT) show which transfers reached it.
// The stimulus is driven with non-blocking assignments from initial blocks (-Wall calls that
// INITIALDLY); they happen 1 ns after a clock edge, away from the design's flops.
/* verilator lint_off INITIALDLY */
module cosim_axil32_tb;
  localparam logic [1:0] OKAY = 2'b00, SLVERR = 2'b10;
  logic clk = 1'b0, rst_n = 1'b0;
  always #5 clk <= ~clk;

  logic [63:0] awaddr = '0, wdata = '0, araddr = '0, rdata;
  logic [7:0] awlen = '0, wstrb = '0, arlen = '0;
  logic [2:0] awsize = 3'd3, arsize = 3'd3;
  logic awvalid = 1'b0, wvalid = 1'b0, wlast = 1'b0, bready = 1'b0, arvalid = 1'b0, rready = 1'b0;
  logic awready, wready, bvalid, arready, rvalid, rlast;
  logic [1:0] bresp, rresp;
  logic [11:0] l_awaddr, l_araddr;
  logic [2:0] l_awprot, l_arprot, l_awuser, l_aruser;
  logic [31:0] l_wdata, l_rdata;
  logic [3:0] l_wstrb;
  logic [1:0] l_bresp, l_rresp;
  logic l_awvalid, l_awready, l_wvalid, l_wready, l_bvalid, l_bready, l_arvalid, l_arready, l_rvalid, l_rready;

  cosim_axil32 #(.ADDR_W(12)) dut (
    .clk(clk), .rst_n(rst_n),
    .s_axi_awaddr(awaddr), .s_axi_awlen(awlen), .s_axi_awsize(awsize), .s_axi_awburst(2'b01),
    .s_axi_awuser(3'd0), .s_axi_awvalid(awvalid), .s_axi_awready(awready),
    .s_axi_wdata(wdata), .s_axi_wstrb(wstrb), .s_axi_wlast(wlast), .s_axi_wvalid(wvalid), .s_axi_wready(wready),
    .s_axi_bresp(bresp), .s_axi_bvalid(bvalid), .s_axi_bready(bready),
    .s_axi_araddr(araddr), .s_axi_arlen(arlen), .s_axi_arsize(arsize), .s_axi_arburst(2'b01),
    .s_axi_aruser(3'd0), .s_axi_arvalid(arvalid), .s_axi_arready(arready),
    .s_axi_rdata(rdata), .s_axi_rresp(rresp), .s_axi_rlast(rlast), .s_axi_rvalid(rvalid), .s_axi_rready(rready),
    .m_axil_awaddr(l_awaddr), .m_axil_awprot(l_awprot), .m_axil_awuser(l_awuser),
    .m_axil_awvalid(l_awvalid), .m_axil_awready(l_awready),
    .m_axil_wdata(l_wdata), .m_axil_wstrb(l_wstrb), .m_axil_wvalid(l_wvalid), .m_axil_wready(l_wready),
    .m_axil_bresp(l_bresp), .m_axil_bvalid(l_bvalid), .m_axil_bready(l_bready),
    .m_axil_araddr(l_araddr), .m_axil_arprot(l_arprot), .m_axil_aruser(l_aruser),
    .m_axil_arvalid(l_arvalid), .m_axil_arready(l_arready),
    .m_axil_rdata(l_rdata), .m_axil_rresp(l_rresp), .m_axil_rvalid(l_rvalid), .m_axil_rready(l_rready)
  );

  cosim_axil32_regs slave (
    .clk(clk), .rst_n(rst_n),
    .awaddr(l_awaddr), .awuser(l_awuser), .awvalid(l_awvalid), .awready(l_awready),
    .wdata(l_wdata), .wstrb(l_wstrb), .wvalid(l_wvalid), .wready(l_wready),
    .bresp(l_bresp), .bvalid(l_bvalid), .bready(l_bready),
    .araddr(l_araddr), .aruser(l_aruser), .arvalid(l_arvalid), .arready(l_arready),
    .rdata(l_rdata), .rresp(l_rresp), .rvalid(l_rvalid), .rready(l_rready)
  );

  int errors = 0;
  task automatic check(input string what, input logic [63:0] got, input logic [63:0] want);
    if (got !== want) begin
      $display("FAIL %s: got %h, want %h", what, got, want);
      errors++;
    end
  endtask

  // The testbench drives 1 ns after a rising edge and samples at the falling edge (mid-cycle),
  // never at the edge itself, so its stimulus and the design's flops cannot race; a handshake is
  // the rising edge after a falling edge that saw valid and ready. Every wait is bounded by this
  // watchdog: a hang is a failure, not a stuck test.
  initial begin
    #1000000;
    $fatal(1, "cosim_axil32_tb: timed out (a handshake never came)");
  end

  // One write: AW, then `len`+1 W beats (W first when w_first), B taken after `b_delay` clocks.
  task automatic write(input logic [63:0] addr, input logic [7:0] len, input logic [63:0] data,
                       input logic [7:0] strb, input bit w_first, input int b_delay, output logic [1:0] resp);
    if (!w_first) begin
      awaddr <= addr; awlen <= len; awvalid <= 1'b1;
      do @(negedge clk); while (!awready);
      @(posedge clk); #1;
      awvalid <= 1'b0;
    end
    for (int b = 0; b <= int'(len); b++) begin
      wdata <= data + 64'(b); wstrb <= strb; wlast <= (b == int'(len)); wvalid <= 1'b1;
      do @(negedge clk); while (!wready);
      @(posedge clk); #1;
      wvalid <= 1'b0;
    end
    if (w_first) begin
      repeat (3) @(posedge clk); #1;
      awaddr <= addr; awlen <= len; awvalid <= 1'b1;
      do @(negedge clk); while (!awready);
      @(posedge clk); #1;
      awvalid <= 1'b0;
    end
    do @(negedge clk); while (!bvalid);
    repeat (b_delay) begin
      @(negedge clk);
      if (!bvalid) $fatal(1, "BVALID dropped before BREADY");
    end
    resp = bresp;
    bready <= 1'b1;
    @(posedge clk); #1;
    bready <= 1'b0;
  endtask

  // One read of `len`+1 beats, each taken after `r_delay` clocks; returns the last beat, checks RLAST.
  task automatic read(input logic [63:0] addr, input logic [7:0] len, input logic [2:0] size, input int r_delay,
                      output logic [63:0] data, output logic [1:0] resp);
    araddr <= addr; arlen <= len; arsize <= size; arvalid <= 1'b1;
    do @(negedge clk); while (!arready);
    @(posedge clk); #1;
    arvalid <= 1'b0;
    for (int b = 0; b <= int'(len); b++) begin
      do @(negedge clk); while (!rvalid);
      repeat (r_delay) begin
        @(negedge clk);
        if (!rvalid) $fatal(1, "RVALID dropped before RREADY");
      end
      check($sformatf("RLAST of beat %0d of %0d", b, int'(len) + 1), 64'(rlast), 64'(b == int'(len)));
      data = rdata; resp = rresp;
      if (b < int'(len)) check("burst beat response", 64'(rresp), 64'(SLVERR));
      rready <= 1'b1;
      @(posedge clk); #1;
      rready <= 1'b0;
    end
  endtask

  logic [63:0] d;
  logic [1:0] r;
  initial begin
    repeat (4) @(posedge clk); #1;
    rst_n <= 1'b1;
    @(posedge clk); #1;
    // A write burst: all 4 W beats taken, SLVERR, nothing reaches the slave.
    write(64'h10, 8'd3, 64'h1111, 8'hFF, 1'b0, 0, r);
    check("write burst response", 64'(r), 64'(SLVERR));
    // A read burst: 3 SLVERR beats, RLAST on the last only.
    read(64'h10, 8'd2, 3'd3, 0, d, r);
    check("read burst response", 64'(r), 64'(SLVERR));
    read(64'h80, 8'd0, 3'd3, 0, d, r);
    check("after the bursts, WCOUNT|RCOUNT", d, 64'h0);
    // W before AW, and B held by the master for 5 clocks.
    write(64'h10, 8'd0, 64'h0123_4567_89ab_cdef, 8'hFF, 1'b1, 5, r);
    check("write with W first", 64'(r), 64'(OKAY));
    // R held by the master for 7 clocks per beat; a 2-byte read of the high word.
    read(64'h10, 8'd0, 3'd3, 7, d, r);
    check("8-byte read back", d, 64'h0123_4567_89ab_cdef);
    read(64'h16, 8'd0, 3'd1, 7, d, r);
    check("2-byte read at 0x16 (lanes 6..7)", 64'(d[63:48]), 64'h0123);
    read(64'h80, 8'd0, 3'd3, 0, d, r);
    check("WCOUNT|RCOUNT: 2 writes, 3 reads", d, {32'd3, 32'd2});
    if (errors != 0) $fatal(1, "cosim_axil32_tb: %0d check(s) failed", errors);
    $display("cosim_axil32_tb: PASS");
    $finish;
  end

  logic unused;
  assign unused = ^{l_awprot, l_arprot};
endmodule
