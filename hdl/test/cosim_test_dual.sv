// cosim_test_dual: two independent test devices (two cosim_pcie_ep instances, two endpoints)
// in one simulation. Endpoints: +cosim_endpoint@TOP.cosim_test_dual.dev0.u_ep=... and dev1.
module cosim_test_dual (
  input logic clk,
  input logic rst_n
);
  cosim_test_top dev0 (.clk(clk), .rst_n(rst_n));  // each gets a private endpoint unless
  cosim_test_top dev1 (.clk(clk), .rst_n(rst_n));  // +cosim_endpoint@<instance>=E names one
endmodule
