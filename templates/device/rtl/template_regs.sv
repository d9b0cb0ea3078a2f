// template_regs: the BAR0 registers of the template device, a 32-bit AXI-Lite slave, and the
// control around the DMA engine (start checks, DONE/ERR, counters, the MSI-X request).
// The register map is in ../README.md (the one place it is written; keep the two in step).
module template_regs (
  input  logic        clk,
  input  logic        rst_n,
  // 32-bit AXI-Lite from cosim_axil32, with the BAR index on a*user
  input  logic [11:0] s_axil_awaddr,
  input  logic [2:0]  s_axil_awuser,
  input  logic        s_axil_awvalid,
  output logic        s_axil_awready,
  input  logic [31:0] s_axil_wdata,
  input  logic [3:0]  s_axil_wstrb,
  input  logic        s_axil_wvalid,
  output logic        s_axil_wready,
  output logic [1:0]  s_axil_bresp,
  output logic        s_axil_bvalid,
  input  logic        s_axil_bready,
  input  logic [11:0] s_axil_araddr,
  input  logic [2:0]  s_axil_aruser,
  input  logic        s_axil_arvalid,
  output logic        s_axil_arready,
  output logic [31:0] s_axil_rdata,
  output logic [1:0]  s_axil_rresp,
  output logic        s_axil_rvalid,
  input  logic        s_axil_rready,
  // DMA engine
  output logic        dma_start,
  output logic [63:0] dma_src,
  output logic [63:0] dma_dst,
  output logic [9:0]  dma_words,
  input  logic        dma_done,
  input  logic        dma_err,
  input  logic [31:0] dma_sum,
  // MSI-X request to cosim_pcie_ep
  output logic        msix_valid,
  input  logic        msix_ready,
  // A transfer in progress (STATUS.BUSY), for cosim_busy in the top
  output logic        busy
);
  localparam logic [31:0] ID = 32'h7E01_0001;  // device id << 16 | register map version
  localparam logic [1:0] OKAY = 2'b00, DECERR = 2'b11;
  // Every BAR arrives on the shell's one m_axi port; a*user says which. BAR2 holds only the
  // MSI-X table and PBA, which the host emulates (they never reach AXI), so only BAR0 should
  // come here: anything else is refused with DECERR rather than aliased onto BAR0. A second
  // register BAR would be decoded here (or routed to its own slave in the top) by its index.
  localparam logic [2:0] REG_BAR = 3'd0;

  logic [31:0] scratch, src_lo, src_hi, dst_lo, dst_hi, len, sum, cycles, count;
  logic        irq_en, done, err;

  // Byte-strobed update of a 32-bit register (the adapter passes 1- and 2-byte writes as strobes).
  function automatic logic [31:0] merge(input logic [31:0] old, input logic [31:0] data, input logic [3:0] strb);
    for (int i = 0; i < 4; i++) if (strb[i]) old[8*i +: 8] = data[8*i +: 8];
    return old;
  endfunction

  // A write is taken when its address and data are both there, in one clock, so nothing has
  // to be buffered; the response waits for the B handshake before the next write.
  logic wr;
  assign wr = s_axil_awvalid && s_axil_wvalid && !s_axil_bvalid;
  assign s_axil_awready = wr;
  assign s_axil_wready  = wr;
  assign s_axil_arready = !s_axil_rvalid;

  // START: LEN a multiple of 8 in 8..4096 and both addresses 8-byte aligned, else ERR, no DMA.
  logic start_req, start_ok;
  assign start_req = wr && s_axil_awuser == REG_BAR && s_axil_awaddr == 12'h008 && s_axil_wstrb[0]
                     && s_axil_wdata[0] && !busy;
  assign start_ok = len[2:0] == 3'b0 && len >= 32'd8 && len <= 32'd4096 && src_lo[2:0] == 3'b0
                    && dst_lo[2:0] == 3'b0;
  assign dma_start = start_req && start_ok;
  assign dma_src = {src_hi, src_lo};
  assign dma_dst = {dst_hi, dst_lo};
  assign dma_words = 10'((len - 32'd1) >> 3) + 10'd1;  // 4096 bytes = 512 words fits in 10 bits

  always_ff @(posedge clk) begin
    if (!rst_n) begin
      scratch <= '0; src_lo <= '0; src_hi <= '0; dst_lo <= '0; dst_hi <= '0; len <= '0;
      sum <= '0; cycles <= '0; count <= '0;
      irq_en <= 1'b0; busy <= 1'b0; done <= 1'b0; err <= 1'b0; msix_valid <= 1'b0;
      s_axil_bvalid <= 1'b0; s_axil_bresp <= OKAY;
      s_axil_rvalid <= 1'b0; s_axil_rresp <= OKAY; s_axil_rdata <= '0;
    end else begin
      // ---- writes
      if (wr) begin
        s_axil_bvalid <= 1'b1;
        s_axil_bresp <= OKAY;
        if (s_axil_awuser != REG_BAR) s_axil_bresp <= DECERR;
        else case (s_axil_awaddr[11:2])
          10'h01: scratch <= merge(scratch, s_axil_wdata, s_axil_wstrb);
          10'h02: if (s_axil_wstrb[0]) irq_en <= s_axil_wdata[1];
          10'h03: if (s_axil_wstrb[0]) begin  // write 1 to clear
            if (s_axil_wdata[1]) done <= 1'b0;
            if (s_axil_wdata[2]) err <= 1'b0;
          end
          10'h04: src_lo <= merge(src_lo, s_axil_wdata, s_axil_wstrb);
          10'h05: src_hi <= merge(src_hi, s_axil_wdata, s_axil_wstrb);
          10'h06: dst_lo <= merge(dst_lo, s_axil_wdata, s_axil_wstrb);
          10'h07: dst_hi <= merge(dst_hi, s_axil_wdata, s_axil_wstrb);
          10'h08: len <= merge(len, s_axil_wdata, s_axil_wstrb);
          10'h00, 10'h09, 10'h0A, 10'h0B: ;  // read-only: writes ignored
          default: s_axil_bresp <= DECERR;
        endcase
      end
      if (s_axil_bvalid && s_axil_bready) s_axil_bvalid <= 1'b0;

      // ---- a transfer: START clears DONE and ERR; it ends with one of them and an interrupt
      if (start_req) begin
        done <= 1'b0;
        cycles <= '0;
        if (start_ok) begin
          busy <= 1'b1;
          err <= 1'b0;
        end else begin
          err <= 1'b1;
          msix_valid <= msix_valid || s_axil_wdata[1];  // IRQ_EN as written with this START
        end
      end
      if (busy) cycles <= cycles + 32'd1;
      // dma_done comes after the last write's response, so the interrupt cannot overtake the data.
      if (dma_done) begin
        busy <= 1'b0;
        sum <= dma_sum;
        if (dma_err) err <= 1'b1;
        else begin
          done <= 1'b1;
          count <= count + 32'd1;
        end
        msix_valid <= msix_valid || irq_en;
      end
      if (msix_valid && msix_ready) msix_valid <= 1'b0;

      // ---- reads
      if (s_axil_arvalid && s_axil_arready) begin
        s_axil_rvalid <= 1'b1;
        s_axil_rresp <= OKAY;
        s_axil_rdata <= '0;
        if (s_axil_aruser != REG_BAR) s_axil_rresp <= DECERR;
        else case (s_axil_araddr[11:2])
          10'h00: s_axil_rdata <= ID;
          10'h01: s_axil_rdata <= scratch;
          10'h02: s_axil_rdata <= {30'b0, irq_en, 1'b0};
          10'h03: s_axil_rdata <= {29'b0, err, done, busy};
          10'h04: s_axil_rdata <= src_lo;
          10'h05: s_axil_rdata <= src_hi;
          10'h06: s_axil_rdata <= dst_lo;
          10'h07: s_axil_rdata <= dst_hi;
          10'h08: s_axil_rdata <= len;
          10'h09: s_axil_rdata <= sum;
          10'h0A: s_axil_rdata <= cycles;
          10'h0B: s_axil_rdata <= count;
          default: s_axil_rresp <= DECERR;
        endcase
      end
      if (s_axil_rvalid && s_axil_rready) s_axil_rvalid <= 1'b0;
    end
  end

  // AXI-Lite addresses from the adapter are 4-byte aligned.
  logic unused;
  assign unused = ^{s_axil_awaddr[1:0], s_axil_araddr[1:0]};
endmodule
