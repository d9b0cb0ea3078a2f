// BAR0 register block (docs/register-map.md, "Registers"): an AXI4 slave with 64-bit data.
//
// Every beat addresses the 8-byte word addr[11:3]: lanes [31:0] are the register at offset
// {addr[11:3], 3'b000}, lanes [63:32] the one at +4, and byte strobes select the bytes written.
// Bursts are accepted (the address advances by 8 per beat). Accesses to other BARs than 0 read 0
// and are ignored.
module gemm_regs #(
    parameter int ROWS    = 4,
    parameter int COLS    = 4,
    parameter int MAX_DIM = 1024
) (
    input  logic         clk,
    input  logic         rst_n,

    input  logic [63:0]  s_axi_awaddr,
    input  logic [7:0]   s_axi_awlen,
    input  logic [2:0]   s_axi_awsize,
    input  logic [1:0]   s_axi_awburst,
    input  logic [2:0]   s_axi_awuser,
    input  logic         s_axi_awvalid,
    output logic         s_axi_awready,
    input  logic [63:0]  s_axi_wdata,
    input  logic [7:0]   s_axi_wstrb,
    input  logic         s_axi_wlast,
    input  logic         s_axi_wvalid,
    output logic         s_axi_wready,
    output logic [1:0]   s_axi_bresp,
    output logic         s_axi_bvalid,
    input  logic         s_axi_bready,
    input  logic [63:0]  s_axi_araddr,
    input  logic [7:0]   s_axi_arlen,
    input  logic [2:0]   s_axi_arsize,
    input  logic [1:0]   s_axi_arburst,
    input  logic [2:0]   s_axi_aruser,
    input  logic         s_axi_arvalid,
    output logic         s_axi_arready,
    output logic [63:0]  s_axi_rdata,
    output logic [1:0]   s_axi_rresp,
    output logic         s_axi_rlast,
    output logic         s_axi_rvalid,
    input  logic         s_axi_rready,

    // to the engine
    output logic         start,          // one-cycle pulses from a CTRL write
    output logic         irq_en,
    output logic         clear,
    output logic [31:0]  cfg_m, cfg_n, cfg_k, cfg_lda, cfg_ldb, cfg_ldc,
    output logic [63:0]  cfg_a, cfg_b, cfg_c,
    output logic [10:0]  cfg_vector,

    // from the engine and the ports
    input  logic         busy,
    input  logic         done,
    input  logic         error,
    input  logic [7:0]   error_code,
    input  logic [63:0]  job_cycles,
    input  logic [63:0]  job_dma_wait,
    input  logic [31:0]  jobs_done,
    input  logic [31:0]  nic_rx_frames,
    input  logic [31:0]  nic_tx_frames,
    input  logic [31:0]  uart_rx_bytes
);
    // Register map: docs/register-map.md, defined in gemm-abi/src/lib.rs (gemm-abi/tests/rtl.rs checks
    // these localparams and the two decoders below against it).
    localparam logic [11:0] REG_ID             = 12'h000;
    localparam logic [11:0] REG_VERSION        = 12'h004;
    localparam logic [11:0] REG_ARRAY          = 12'h008;
    localparam logic [11:0] REG_MAX_DIM        = 12'h00c;
    localparam logic [11:0] REG_CTRL           = 12'h010;
    localparam logic [11:0] REG_STATUS         = 12'h014;
    localparam logic [11:0] REG_ERROR          = 12'h018;
    localparam logic [11:0] REG_MSIX_VECTOR    = 12'h01c;
    localparam logic [11:0] REG_M              = 12'h020;
    localparam logic [11:0] REG_N              = 12'h024;
    localparam logic [11:0] REG_K              = 12'h028;
    localparam logic [11:0] REG_LDA            = 12'h02c;
    localparam logic [11:0] REG_LDB            = 12'h030;
    localparam logic [11:0] REG_LDC            = 12'h034;
    localparam logic [11:0] REG_A_ADDR_LO      = 12'h038;
    localparam logic [11:0] REG_A_ADDR_HI      = 12'h03c;
    localparam logic [11:0] REG_B_ADDR_LO      = 12'h040;
    localparam logic [11:0] REG_B_ADDR_HI      = 12'h044;
    localparam logic [11:0] REG_C_ADDR_LO      = 12'h048;
    localparam logic [11:0] REG_C_ADDR_HI      = 12'h04c;
    localparam logic [11:0] REG_CYCLES_LO      = 12'h050;
    localparam logic [11:0] REG_CYCLES_HI      = 12'h054;
    localparam logic [11:0] REG_BUSY_CYCLES_LO = 12'h058;
    localparam logic [11:0] REG_BUSY_CYCLES_HI = 12'h05c;
    localparam logic [11:0] REG_IDLE_CYCLES_LO = 12'h060;
    localparam logic [11:0] REG_IDLE_CYCLES_HI = 12'h064;
    localparam logic [11:0] REG_DMA_WAIT_LO    = 12'h068;
    localparam logic [11:0] REG_DMA_WAIT_HI    = 12'h06c;
    localparam logic [11:0] REG_JOBS_DONE      = 12'h070;
    localparam logic [11:0] REG_SCRATCH        = 12'h074;
    localparam logic [11:0] REG_JOB_PRIORITY   = 12'h078;
    localparam logic [11:0] REG_NIC_RX_FRAMES  = 12'h080;
    localparam logic [11:0] REG_NIC_TX_FRAMES  = 12'h084;
    localparam logic [11:0] REG_UART_RX_BYTES  = 12'h088;
    localparam logic [31:0] ID_VALUE      = 32'h4745_4d4d;   // "GEMM"
    localparam logic [31:0] VERSION_VALUE = 32'h0001_0001;   // 1.1 (adds JOB_PRIORITY)
    // Fields: the bit of one-bit fields, LSB and width of wider ones.
    localparam int ARRAY_ROWS_LSB = 0, ARRAY_ROWS_W = 8, ARRAY_COLS_LSB = 8, ARRAY_COLS_W = 8;
    localparam int CTRL_START = 0, CTRL_IRQ_EN = 1, CTRL_CLEAR = 2;
    localparam int STATUS_BUSY = 0, STATUS_DONE = 1, STATUS_ERROR = 2;
    localparam int JOB_PRIORITY_PRIORITY_LSB = 0, JOB_PRIORITY_PRIORITY_W = 2;

    // JOB_PRIORITY.PRIORITY: stored and read back, nothing else here uses it (a mediator that
    // shares the device between VMs reads it). Reset 0, kept across jobs; the other bits read 0.
    logic [JOB_PRIORITY_PRIORITY_W-1:0] job_priority;

    logic [31:0] scratch, vector_q;
    logic [63:0] busy_cycles, idle_cycles;

    always_ff @(posedge clk) begin
        if (!rst_n) begin
            busy_cycles <= '0;
            idle_cycles <= '0;
        end else if (busy) begin
            busy_cycles <= busy_cycles + 64'd1;
        end else begin
            idle_cycles <= idle_cycles + 64'd1;
        end
    end

    // ---- read mux: 32-bit register at word index w (offset = 4 * w) ----
    function automatic logic [31:0] reg_value(input logic [9:0] w);
        reg_value = 32'd0;
        case ({w, 2'b00})
            REG_ID            : reg_value = ID_VALUE;
            REG_VERSION       : reg_value = VERSION_VALUE;
            REG_ARRAY         : begin
                reg_value[ARRAY_ROWS_LSB +: ARRAY_ROWS_W] = ARRAY_ROWS_W'(ROWS);
                reg_value[ARRAY_COLS_LSB +: ARRAY_COLS_W] = ARRAY_COLS_W'(COLS);
            end
            REG_MAX_DIM       : reg_value = 32'(MAX_DIM);
            REG_STATUS        : begin
                reg_value[STATUS_BUSY]  = busy;
                reg_value[STATUS_DONE]  = done;
                reg_value[STATUS_ERROR] = error;
            end
            REG_ERROR         : reg_value = {24'd0, error_code};
            REG_MSIX_VECTOR   : reg_value = vector_q;
            REG_M             : reg_value = cfg_m;
            REG_N             : reg_value = cfg_n;
            REG_K             : reg_value = cfg_k;
            REG_LDA           : reg_value = cfg_lda;
            REG_LDB           : reg_value = cfg_ldb;
            REG_LDC           : reg_value = cfg_ldc;
            REG_A_ADDR_LO     : reg_value = cfg_a[31:0];
            REG_A_ADDR_HI     : reg_value = cfg_a[63:32];
            REG_B_ADDR_LO     : reg_value = cfg_b[31:0];
            REG_B_ADDR_HI     : reg_value = cfg_b[63:32];
            REG_C_ADDR_LO     : reg_value = cfg_c[31:0];
            REG_C_ADDR_HI     : reg_value = cfg_c[63:32];
            REG_CYCLES_LO     : reg_value = job_cycles[31:0];
            REG_CYCLES_HI     : reg_value = job_cycles[63:32];
            REG_BUSY_CYCLES_LO: reg_value = busy_cycles[31:0];
            REG_BUSY_CYCLES_HI: reg_value = busy_cycles[63:32];
            REG_IDLE_CYCLES_LO: reg_value = idle_cycles[31:0];
            REG_IDLE_CYCLES_HI: reg_value = idle_cycles[63:32];
            REG_DMA_WAIT_LO   : reg_value = job_dma_wait[31:0];
            REG_DMA_WAIT_HI   : reg_value = job_dma_wait[63:32];
            REG_JOBS_DONE     : reg_value = jobs_done;
            REG_SCRATCH       : reg_value = scratch;
            REG_JOB_PRIORITY  : reg_value[JOB_PRIORITY_PRIORITY_LSB +: JOB_PRIORITY_PRIORITY_W] = job_priority;
            REG_NIC_RX_FRAMES : reg_value = nic_rx_frames;
            REG_NIC_TX_FRAMES : reg_value = nic_tx_frames;
            REG_UART_RX_BYTES : reg_value = uart_rx_bytes;
            default: ;
        endcase
    endfunction

    // ---- read channel ----
    logic [8:0] rd_word;      // addr[11:3] of the current beat
    logic [7:0] rd_left;      // beats after the current one
    logic       rd_bar0;
    always_ff @(posedge clk) begin
        if (!rst_n) begin
            s_axi_rvalid <= 1'b0;
        end else if (!s_axi_rvalid) begin
            if (s_axi_arvalid) begin
                s_axi_rvalid <= 1'b1;
                s_axi_rdata  <= (s_axi_aruser == 3'd0)
                              ? {reg_value({s_axi_araddr[11:3], 1'b1}), reg_value({s_axi_araddr[11:3], 1'b0})}
                              : 64'd0;
                s_axi_rlast  <= (s_axi_arlen == 8'd0);
                rd_word      <= s_axi_araddr[11:3] + 9'd1;
                rd_left      <= s_axi_arlen;
                rd_bar0      <= (s_axi_aruser == 3'd0);
            end
        end else if (s_axi_rready) begin
            if (rd_left == 8'd0) begin
                s_axi_rvalid <= 1'b0;
            end else begin
                s_axi_rdata <= rd_bar0 ? {reg_value({rd_word, 1'b1}), reg_value({rd_word, 1'b0})} : 64'd0;
                s_axi_rlast <= (rd_left == 8'd1);
                rd_word     <= rd_word + 9'd1;
                rd_left     <= rd_left - 8'd1;
            end
        end
    end
    assign s_axi_arready = !s_axi_rvalid;
    assign s_axi_rresp   = 2'b00;

    // ---- write channel: AW, then W beats, then B ----
    logic       aw_taken;     // an address is held, W beats are accepted
    logic [8:0] wr_word;
    logic       wr_bar0;
    assign s_axi_awready = !aw_taken && !s_axi_bvalid;
    assign s_axi_wready  = aw_taken;
    assign s_axi_bresp   = 2'b00;

    function automatic logic [31:0] merge(input logic [31:0] old, input logic [31:0] data,
                                          input logic [3:0] strb);
        for (int i = 0; i < 4; i++) merge[8*i +: 8] = strb[i] ? data[8*i +: 8] : old[8*i +: 8];
    endfunction

    always_ff @(posedge clk) begin
        start <= 1'b0;
        clear <= 1'b0;
        if (!rst_n) begin
            aw_taken     <= 1'b0;
            s_axi_bvalid <= 1'b0;
            cfg_m <= '0;  cfg_n <= '0;  cfg_k <= '0;
            cfg_lda <= '0;  cfg_ldb <= '0;  cfg_ldc <= '0;
            cfg_a <= '0;  cfg_b <= '0;  cfg_c <= '0;
            vector_q <= '0;
            scratch  <= '0;
            job_priority <= '0;
            irq_en   <= 1'b0;
        end else begin
            if (s_axi_bvalid && s_axi_bready) s_axi_bvalid <= 1'b0;
            if (s_axi_awvalid && s_axi_awready) begin
                aw_taken <= 1'b1;
                wr_word  <= s_axi_awaddr[11:3];
                wr_bar0  <= (s_axi_awuser == 3'd0);
            end
            if (s_axi_wvalid && s_axi_wready) begin
                wr_word <= wr_word + 9'd1;
                if (s_axi_wlast) begin
                    aw_taken     <= 1'b0;
                    s_axi_bvalid <= 1'b1;
                end
                if (wr_bar0) begin
                    for (int h = 0; h < 2; h++) begin
                        logic [31:0] d;
                        logic [3:0]  st;
                        d  = s_axi_wdata[32*h +: 32];
                        st = s_axi_wstrb[4*h +: 4];
                        if (st != 4'd0) begin
                            case ({wr_word, 1'(h), 2'b00})
                                REG_CTRL          : if (st[0]) begin
                                    start  <= d[CTRL_START];
                                    irq_en <= d[CTRL_IRQ_EN];
                                    clear  <= d[CTRL_CLEAR];
                                end
                                REG_MSIX_VECTOR   : vector_q <= merge(vector_q, d, st);
                                REG_M             : cfg_m    <= merge(cfg_m, d, st);
                                REG_N             : cfg_n    <= merge(cfg_n, d, st);
                                REG_K             : cfg_k    <= merge(cfg_k, d, st);
                                REG_LDA           : cfg_lda  <= merge(cfg_lda, d, st);
                                REG_LDB           : cfg_ldb  <= merge(cfg_ldb, d, st);
                                REG_LDC           : cfg_ldc  <= merge(cfg_ldc, d, st);
                                REG_A_ADDR_LO     : cfg_a[31:0]  <= merge(cfg_a[31:0], d, st);
                                REG_A_ADDR_HI     : cfg_a[63:32] <= merge(cfg_a[63:32], d, st);
                                REG_B_ADDR_LO     : cfg_b[31:0]  <= merge(cfg_b[31:0], d, st);
                                REG_B_ADDR_HI     : cfg_b[63:32] <= merge(cfg_b[63:32], d, st);
                                REG_C_ADDR_LO     : cfg_c[31:0]  <= merge(cfg_c[31:0], d, st);
                                REG_C_ADDR_HI     : cfg_c[63:32] <= merge(cfg_c[63:32], d, st);
                                REG_SCRATCH       : scratch  <= merge(scratch, d, st);
                                // the field lies in one byte: its strobe writes it
                                REG_JOB_PRIORITY  : if (st[JOB_PRIORITY_PRIORITY_LSB / 8])
                                    job_priority <= d[JOB_PRIORITY_PRIORITY_LSB +: JOB_PRIORITY_PRIORITY_W];
                                default: ;
                            endcase
                        end
                    end
                end
            end
        end
    end
    assign cfg_vector = vector_q[10:0];

    logic unused;
    assign unused = ^{s_axi_awaddr[63:12], s_axi_awaddr[2:0], s_axi_awlen, s_axi_awsize,
                      s_axi_awburst, s_axi_araddr[63:12], s_axi_araddr[2:0], s_axi_arsize,
                      s_axi_arburst};
endmodule
