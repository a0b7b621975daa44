// Command library shows the embeddable data plane: an application routes
// its own HTTP requests through meshlet in process, with a static
// bootstrap and no proxy. It starts two local backends, splits traffic
// 75/25 between them by the bootstrap's route, retries 5xx, and prints
// which backend answered.
//
//	go run ./examples/library
package main
