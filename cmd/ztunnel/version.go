package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// version is set with -ldflags "-X main.version=..." by releases; otherwise
// the module version from the build info is used.
var version = ""

type buildInfo struct {
	Version, GoVersion, Commit string
	Modified                   bool
}

func readBuildInfo() buildInfo {
	bi := buildInfo{Version: version, GoVersion: runtime.Version(), Commit: "unknown"}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		if bi.Version == "" {
			bi.Version = "unknown"
		}
		return bi
	}
	if bi.Version == "" {
		bi.Version = info.Main.Version // "(devel)" for a local build
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			bi.Commit = s.Value
		case "vcs.modified":
			bi.Modified = s.Value == "true"
		}
	}
	if bi.Version == "" {
		bi.Version = "(devel)"
	}
	return bi
}

func printVersion(w io.Writer) {
	bi := readBuildInfo()
	commit := bi.Commit
	if bi.Modified {
		commit += " (modified)"
	}
	fmt.Fprintf(w, "ztunnel (meshlet) %s\ngo: %s\ncommit: %s\n", bi.Version, bi.GoVersion, commit)
}
