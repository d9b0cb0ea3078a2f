// cosim_busy: how a design tells the simulation when it is busy, so that an idle simulation
// sleeps instead of burning a core (docs/hdl-endpoint.md, "Idle sleep").
//
// Drive `busy` high while the design has work of its own in progress: a job computing, a DMA
// engine running, a timer counting towards something, an interrupt not yet requested. Low
// means: until the host or the bridge gives it something (an MMIO access, DMA read data, a
// frame, a serial byte, a reset), no clock changes anything that matters. With every instance
// low and nothing pending in any cosim_pcie_ep for a grace period, the simulation main stops
// the clock and sleeps until the next message. A design without any instance never sleeps.
//
// One DPI call per change of `busy` (none while it holds): costs nothing per clock.
module cosim_busy (
  input logic clk,
  input logic busy
);
  import cosim_dpi_pkg::*;

  bit reported = 1'b1;  // cosim_busy_declare counts this instance as busy

  initial cosim_busy_declare();

  always_ff @(posedge clk) begin
    if (busy != reported) begin
      cosim_busy_set(busy);
      reported <= busy;
    end
  end
endmodule
