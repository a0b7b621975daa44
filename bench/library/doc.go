// Command library is the library-latency benchmark's load program (issue 7):
// it sends HTTP/1.1 GETs at a fixed rate from a fixed number of workers
// through the meshlet library's in-process RoundTripper, through net/http
// to a local meshlet proxy, and straight to the backend, the modes taking
// turns in short slices, and prints per mode p50/p90/p99 latency, the
// achieved rate, errors and its own CPU as JSON lines. bench/run.sh runs it
// on the load CPU (bench/library/scenario.sh).
//
// It imports the root meshlet package only; nothing imports it.
package main
