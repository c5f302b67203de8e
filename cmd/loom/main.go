// Command loom is Loom's CNI plugin; runtimes execute it from /opt/cni/bin.
package main

import "github.com/loomnet/loom/cniplugin"

func main() { cniplugin.Main() }
