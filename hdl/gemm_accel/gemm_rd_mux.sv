// Two AXI4 read masters onto one: the AR channel is arbitrated (alternating when both ask; a
// request once presented is held until accepted, as AXI requires), and the port number becomes
// the top ARID bit, by which the R channel is routed back.
module gemm_rd_mux #(
    parameter int ID_W = 4          // ID width of the shared channel; ports use ID_W - 1 bits
) (
    input  logic            clk,
    input  logic            rst_n,

    input  logic [ID_W-2:0] p0_arid,
    input  logic [63:0]     p0_araddr,
    input  logic [7:0]      p0_arlen,
    input  logic [2:0]      p0_arsize,
    input  logic [1:0]      p0_arburst,
    input  logic            p0_arvalid,
    output logic            p0_arready,
    output logic [ID_W-2:0] p0_rid,
    output logic            p0_rvalid,
    input  logic            p0_rready,

    input  logic [ID_W-2:0] p1_arid,
    input  logic [63:0]     p1_araddr,
    input  logic [7:0]      p1_arlen,
    input  logic [2:0]      p1_arsize,
    input  logic [1:0]      p1_arburst,
    input  logic            p1_arvalid,
    output logic            p1_arready,
    output logic [ID_W-2:0] p1_rid,
    output logic            p1_rvalid,
    input  logic            p1_rready,

    output logic [ID_W-1:0] m_arid,
    output logic [63:0]     m_araddr,
    output logic [7:0]      m_arlen,
    output logic [2:0]      m_arsize,
    output logic [1:0]      m_arburst,
    output logic            m_arvalid,
    input  logic            m_arready,
    input  logic [ID_W-1:0] m_rid,
    input  logic            m_rvalid,
    output logic            m_rready
);
    logic held, held_port, last_port, sel;

    always_comb begin
        if (held)                                    sel = held_port;
        else if (p0_arvalid && p1_arvalid)           sel = !last_port;
        else                                         sel = p1_arvalid;
    end

    assign m_arvalid  = sel ? p1_arvalid : p0_arvalid;
    assign m_arid     = sel ? {1'b1, p1_arid} : {1'b0, p0_arid};
    assign m_araddr   = sel ? p1_araddr  : p0_araddr;
    assign m_arlen    = sel ? p1_arlen   : p0_arlen;
    assign m_arsize   = sel ? p1_arsize  : p0_arsize;
    assign m_arburst  = sel ? p1_arburst : p0_arburst;
    assign p0_arready = !sel && m_arready;
    assign p1_arready = sel && m_arready;

    always_ff @(posedge clk) begin
        if (!rst_n) begin
            held      <= 1'b0;
            held_port <= 1'b0;
            last_port <= 1'b1;
        end else begin
            held      <= m_arvalid && !m_arready;
            held_port <= sel;
            if (m_arvalid && m_arready) last_port <= sel;
        end
    end

    assign p0_rid    = m_rid[ID_W-2:0];
    assign p1_rid    = m_rid[ID_W-2:0];
    assign p0_rvalid = m_rvalid && !m_rid[ID_W-1];
    assign p1_rvalid = m_rvalid && m_rid[ID_W-1];
    assign m_rready  = m_rid[ID_W-1] ? p1_rready : p0_rready;
endmodule
