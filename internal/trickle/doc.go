// Package trickle is test support: a request body that sends one byte at
// a time with a pause between, for tests of timeouts that bound how long a
// request may take to arrive (unit and end to end). It imports no meshlet
// package.
package trickle
