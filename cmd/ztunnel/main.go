package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2 // also config.ExitCode: bad flags or bootstrap
)

const usage = `usage: ztunnel <command> [flags]

commands:
  run      run the proxy from a bootstrap file (and ADS)
  demo     run a self-contained traffic-splitting demo on loopback
  agent    proxyless gRPC agent: xDS bootstrap, xDS proxy and certificate files
  version  print version information

Run "ztunnel <command> -h" for the command's flags.
`

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

func dispatch(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "run":
		return runCmd(args[1:], stderr, getenv)
	case "agent":
		return agentCmd(args[1:], stdout, stderr, getenv)
	case "demo":
		return demoCmd(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		printVersion(stdout)
		return exitOK
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "ztunnel: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}

// newLogger returns a text logger on w at the named level.
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// newLevelLogger is newLogger with its level in a LevelVar, so /logging
// can change it while running.
func newLevelLogger(w io.Writer, level string) (*slog.Logger, *slog.LevelVar, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	lv := new(slog.LevelVar)
	lv.Set(l)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lv})), lv, nil
}
