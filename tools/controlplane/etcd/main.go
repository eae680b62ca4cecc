// Command etcd is the upstream etcd server, built from Go modules for
// sealcred's loopback test environment.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
