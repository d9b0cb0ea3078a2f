// UART byte port (docs/register-map.md, "UART and Ethernet"): after every reset it sends the
// banner "GEMM accelerator v1.1 ready\r\n", then echoes every received byte. Bytes received while
// the banner is still going out wait in a FIFO of 2**FIFO_W entries.
module gemm_uart #(
    parameter int FIFO_W = 4
) (
    input  logic        clk,
    input  logic        rst_n,
    output logic        uart_tx_valid,
    input  logic        uart_tx_ready,
    output logic [7:0]  uart_tx_data,
    input  logic        uart_rx_valid,
    output logic        uart_rx_ready,
    input  logic [7:0]  uart_rx_data,
    output logic [31:0] rx_bytes
);
    // gemm-abi `UART_BANNER` (checked by gemm-abi/tests/rtl.rs).
    localparam int BANNER_LEN = 29;
    localparam logic [8*BANNER_LEN-1:0] BANNER = "GEMM accelerator v1.1 ready\r\n";

    logic [7:0] banner_pos;            // next banner byte; BANNER_LEN when done
    logic       in_banner;
    assign in_banner = (banner_pos != 8'(BANNER_LEN));

    logic [7:0]      fifo [2**FIFO_W];
    logic [FIFO_W:0] wp, rp;
    logic            empty, full;
    assign empty = (wp == rp);
    assign full  = (wp[FIFO_W] != rp[FIFO_W]) && (wp[FIFO_W-1:0] == rp[FIFO_W-1:0]);

    logic running;                     // low during reset: no handshakes then
    assign uart_rx_ready = running && !full;
    assign uart_tx_valid = running && (in_banner || !empty);
    assign uart_tx_data  = in_banner ? BANNER[8*(BANNER_LEN - 1 - int'(banner_pos)) +: 8]
                                     : fifo[rp[FIFO_W-1:0]];
    always_ff @(posedge clk) begin
        if (!rst_n) begin
            banner_pos <= '0;
            wp         <= '0;
            rp         <= '0;
            rx_bytes   <= '0;
            running    <= 1'b0;
        end else begin
            running <= 1'b1;
            if (uart_rx_valid && uart_rx_ready) begin
                fifo[wp[FIFO_W-1:0]] <= uart_rx_data;
                wp       <= wp + 1'b1;
                rx_bytes <= rx_bytes + 32'd1;
            end
            if (uart_tx_valid && uart_tx_ready) begin
                if (in_banner) banner_pos <= banner_pos + 8'd1;
                else           rp <= rp + 1'b1;
            end
        end
    end
endmodule
