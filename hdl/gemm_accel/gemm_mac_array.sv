// ROWS x COLS array of MAC units. Row r receives a[r] (one element of a row of A), column c
// receives b[c] (one element of a row of B); unit (r, c) accumulates C[r][c] over k.
module gemm_mac_array #(
    parameter int ROWS = 4,
    parameter int COLS = 4
) (
    input  logic                   clk,
    input  logic                   en,
    input  logic                   clr,
    input  logic [ROWS-1:0][7:0]   a,
    input  logic [COLS-1:0][7:0]   b,
    output logic [ROWS-1:0][COLS-1:0][31:0] acc
);
    for (genvar r = 0; r < ROWS; r++) begin : g_row
        for (genvar c = 0; c < COLS; c++) begin : g_col
            gemm_mac u_mac (
                .clk (clk),
                .en  (en),
                .clr (clr),
                .a   (a[r]),
                .b   (b[c]),
                .acc (acc[r][c])
            );
        end
    end
endmodule
