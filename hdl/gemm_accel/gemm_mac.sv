// One multiply-accumulate unit: int8 x int8 products accumulated into a wrapping int32
// (two's complement, mod 2^32), as docs/register-map.md "Data types" specifies.
module gemm_mac (
    input  logic               clk,
    input  logic               en,     // accumulate this cycle
    input  logic               clr,    // with en: start a new sum (acc = a*b)
    input  logic signed [7:0]  a,
    input  logic signed [7:0]  b,
    output logic signed [31:0] acc
);
    logic signed [15:0] prod;
    assign prod = a * b;

    always_ff @(posedge clk) begin
        if (en) acc <= (clr ? 32'sd0 : acc) + 32'(prod);
    end
endmodule
