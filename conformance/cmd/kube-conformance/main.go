// Command kube-conformance runs a real Kubernetes control plane on loopback for epcheck's
// conformance tests. It is test support, not part of the product.
//
// One binary, several roles (the first argument picks one):
//
//	serve                    embedded etcd, then kube-apiserver and kube-controller-manager as
//	                         child processes of this same binary; prints one JSON line when ready
//	kube-apiserver ARGS      the real kube-apiserver (k8s.io/kubernetes/cmd/kube-apiserver/app)
//	kube-controller-manager  the real kube-controller-manager
//	elect ARGS               a client-go leaderelection candidate on a Lease
//
// The server roles run as separate processes because each installs its own signal handler,
// which Kubernetes allows only once per process.
package main

import (
	"fmt"
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

const usage = `usage: kube-conformance serve [flags] | elect [flags] | kube-apiserver ARGS | kube-controller-manager ARGS
run "kube-conformance serve -h" or "kube-conformance elect -h" for the flags`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "serve":
		os.Exit(runServe(args))
	case "elect":
		os.Exit(runElect(args))
	case "kube-apiserver":
		command := apiserver.NewAPIServerCommand()
		command.SetArgs(args)
		os.Exit(cli.Run(command))
	case "kube-controller-manager":
		command := controllermanager.NewControllerManagerCommand()
		command.SetArgs(args)
		os.Exit(cli.Run(command))
	default:
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
}
