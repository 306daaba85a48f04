package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// runElect contends for a Lease with client-go's own leader election and prints one line per
// change, "leading <unix-nanos>" or "stopped <unix-nanos>", so a test can check that it never
// leads while another candidate does.
func runElect(args []string) int {
	fs := flag.NewFlagSet("elect", flag.ContinueOnError)
	server := fs.String("server", "", "ApiServer URL")
	caFile := fs.String("ca-file", "", "CA bundle of the ApiServer")
	tokenFile := fs.String("token-file", "", "file holding the bearer token")
	namespace := fs.String("namespace", "default", "namespace of the Lease")
	name := fs.String("name", "", "name of the Lease")
	identity := fs.String("identity", "", "holder identity written into the Lease")
	leaseDuration := fs.Duration("lease-duration", 15*time.Second, "lease duration")
	renewDeadline := fs.Duration("renew-deadline", 10*time.Second, "renew deadline")
	retryPeriod := fs.Duration("retry-period", 2*time.Second, "retry period")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *server == "" || *name == "" || *identity == "" || *tokenFile == "" {
		fmt.Fprintln(os.Stderr, "elect: -server, -token-file, -name and -identity are required")
		return 2
	}
	token, err := os.ReadFile(*tokenFile)
	if err != nil {
		fmt.Fprintf(os.Stderr, "elect: %v\n", err)
		return 1
	}
	config := &rest.Config{Host: *server, BearerToken: string(token),
		TLSClientConfig: rest.TLSClientConfig{CAFile: *caFile}}
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		fmt.Fprintf(os.Stderr, "elect: %v\n", err)
		return 1
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1ObjectMeta(*namespace, *name),
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: *identity},
	}
	leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   *leaseDuration,
		RenewDeadline:   *renewDeadline,
		RetryPeriod:     *retryPeriod,
		ReleaseOnCancel: true,
		Name:            *identity,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(context.Context) {
				fmt.Printf("leading %d\n", time.Now().UnixNano())
			},
			OnStoppedLeading: func() {
				fmt.Printf("stopped %d\n", time.Now().UnixNano())
			},
		},
	})
	return 0
}

func metav1ObjectMeta(namespace, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: namespace, Name: name}
}
