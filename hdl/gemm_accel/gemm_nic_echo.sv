// Ethernet echo port (docs/register-map.md, "UART and Ethernet"): store-and-forward of one
// frame at a time. Every received frame is sent back with destination and source MAC addresses
// swapped (bytes 0-5 <-> 6-11) and all other bytes unchanged. Frames shorter than 12 bytes are
// sent back unchanged; frames longer than MAX_BEATS * 8 bytes are counted and dropped.
// Beats must carry contiguous bytes from lane 0 (tkeep = 2**n - 1), as AXI-Stream packets do.
module gemm_nic_echo #(
    parameter int MAX_BEATS = 1024
) (
    input  logic        clk,
    input  logic        rst_n,
    // frames in
    input  logic [63:0] rx_tdata,
    input  logic [7:0]  rx_tkeep,
    input  logic        rx_tlast,
    input  logic        rx_tvalid,
    output logic        rx_tready,
    // frames out
    output logic [63:0] tx_tdata,
    output logic [7:0]  tx_tkeep,
    output logic        tx_tlast,
    output logic        tx_tvalid,
    input  logic        tx_tready,
    output logic [31:0] rx_frames,
    output logic [31:0] tx_frames
);
    localparam int BW = $clog2(MAX_BEATS + 1);

    logic [63:0]   mem [MAX_BEATS];
    logic [BW-1:0] rx_cnt, tx_cnt, tx_beats;
    logic [7:0]    last_keep;
    logic          overflow, sending;

    // The frame is swappable when it has at least 12 bytes: two beats, the second keeping 4+.
    logic swap;
    assign swap = (tx_beats > BW'(2)) || (tx_beats == BW'(2) && last_keep[3]);

    logic [63:0] beat0, beat1, cur;
    assign beat0 = mem[0];
    assign beat1 = mem[1];
    assign cur   = mem[tx_cnt[$clog2(MAX_BEATS)-1:0]];
    always_comb begin
        tx_tdata = cur;
        if (swap && tx_cnt == '0) tx_tdata = {beat0[15:0], beat1[31:0], beat0[63:48]};
        if (swap && tx_cnt == BW'(1)) tx_tdata = {beat1[63:32], beat0[47:16]};
    end
    // Byte i of the frame is lane i%8 of beat i/8. Beat 0 out: bytes 6..11 then 0..1;
    // beat 1 out: bytes 2..5 then 12..15.

    assign tx_tvalid = sending;
    assign tx_tlast  = (tx_cnt == tx_beats - 1'b1);
    assign tx_tkeep  = tx_tlast ? last_keep : 8'hff;
    assign rx_tready = !sending;

    always_ff @(posedge clk) begin
        if (!rst_n) begin
            rx_cnt    <= '0;
            tx_cnt    <= '0;
            sending   <= 1'b0;
            overflow  <= 1'b0;
            rx_frames <= '0;
            tx_frames <= '0;
        end else begin
            if (rx_tvalid && rx_tready) begin
                if (rx_cnt < BW'(MAX_BEATS)) begin
                    mem[rx_cnt[$clog2(MAX_BEATS)-1:0]] <= rx_tdata;
                    rx_cnt <= rx_cnt + 1'b1;
                end else begin
                    overflow <= 1'b1;
                end
                if (rx_tlast) begin
                    rx_frames <= rx_frames + 32'd1;
                    rx_cnt    <= '0;
                    overflow  <= 1'b0;
                    if (!overflow && rx_cnt < BW'(MAX_BEATS)) begin
                        sending   <= 1'b1;
                        tx_cnt    <= '0;
                        tx_beats  <= rx_cnt + 1'b1;
                        last_keep <= rx_tkeep;
                    end
                end
            end
            if (tx_tvalid && tx_tready) begin
                tx_cnt <= tx_cnt + 1'b1;
                if (tx_tlast) begin
                    sending   <= 1'b0;
                    tx_frames <= tx_frames + 32'd1;
                end
            end
        end
    end
endmodule
