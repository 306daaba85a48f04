package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// ready is the JSON line printed on stdout (and written to -ready-file) once the control plane
// answers and the mirroring controller has mirrored a test object.
type ready struct {
	URL          string `json:"url"`
	CAFile       string `json:"ca_file"`
	AdminToken   string `json:"admin_token"`
	EpcheckToken string `json:"epcheck_token"`
	EpcheckUser  string `json:"epcheck_user"`
	Kubeconfig   string `json:"kubeconfig"`
	AuditLog     string `json:"audit_log"`
	Dir          string `json:"dir"`
	Version      string `json:"version"`
}

type serveFlags struct {
	dir            string
	readyFile      string
	epcheckUser    string
	watchStdin     bool
	keep           bool
	startupTimeout time.Duration
}

func runServe(args []string) int {
	var f serveFlags
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.StringVar(&f.dir, "dir", "", "working directory (default: a new temporary directory, removed on exit)")
	fs.StringVar(&f.readyFile, "ready-file", "", "also write the ready JSON line to this file")
	fs.StringVar(&f.epcheckUser, "epcheck-user", "system:serviceaccount:epcheck:epcheck",
		"user name of epcheck's token (a service account name matches RBAC bindings to that account)")
	fs.BoolVar(&f.watchStdin, "exit-on-stdin-eof", false, "shut down when standard input closes (for test harnesses)")
	fs.BoolVar(&f.keep, "keep", false, "keep the working directory on exit")
	fs.DurationVar(&f.startupTimeout, "startup-timeout", 3*time.Minute, "give up when not ready by then")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := serve(f); err != nil {
		fmt.Fprintf(os.Stderr, "kube-conformance: %v\n", err)
		return 1
	}
	return 0
}

func serve(f serveFlags) (err error) {
	if f.dir == "" {
		f.dir, err = os.MkdirTemp("", "kube-conformance-")
		if err != nil {
			return err
		}
		if !f.keep {
			defer os.RemoveAll(f.dir)
		}
	} else if err := os.MkdirAll(f.dir, 0o700); err != nil {
		return err
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	stdinClosed := make(chan struct{})
	if f.watchStdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			close(stdinClosed)
		}()
	}

	p, err := makePKI(f.dir)
	if err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	adminToken, err := randomToken()
	if err != nil {
		return err
	}
	epcheckToken, err := randomToken()
	if err != nil {
		return err
	}
	tokenFile := filepath.Join(f.dir, "tokens.csv")
	ns := serviceAccountNamespace(f.epcheckUser)
	tokens := fmt.Sprintf("%s,conformance-admin,conformance-admin,\"system:masters\"\n"+
		"%s,%s,epcheck-uid,\"system:serviceaccounts,system:serviceaccounts:%s\"\n",
		adminToken, epcheckToken, f.epcheckUser, ns)
	if err := os.WriteFile(tokenFile, []byte(tokens), 0o600); err != nil {
		return err
	}
	auditPolicy := filepath.Join(f.dir, "audit-policy.yaml")
	policy := "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n"
	if err := os.WriteFile(auditPolicy, []byte(policy), 0o600); err != nil {
		return err
	}
	auditLog := filepath.Join(f.dir, "audit.log")

	etcd, etcdURL, err := startEtcd(f.dir)
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer etcd.Close()

	port, err := freePort()
	if err != nil {
		return err
	}
	serverURL := "https://127.0.0.1:" + strconv.Itoa(port)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	apiserver, err := startChild(f.dir, "kube-apiserver", self, "kube-apiserver",
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1",
		// Written into the default/kubernetes Endpoints only; nothing connects to it
		// (TEST-NET-3, a lab range; no kube-proxy runs).
		"--advertise-address=203.0.113.1",
		"--secure-port="+strconv.Itoa(port),
		"--tls-cert-file="+p.certFile,
		"--tls-private-key-file="+p.keyFile,
		"--client-ca-file="+p.caFile,
		"--authorization-mode=Node,RBAC",
		"--token-auth-file="+tokenFile,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+p.saPublicFile,
		"--service-account-signing-key-file="+p.saPrivateFile,
		"--service-cluster-ip-range=10.96.0.0/16",
		"--audit-policy-file="+auditPolicy,
		"--audit-log-path="+auditLog,
		"--audit-log-format=json",
		"--audit-log-mode=blocking",
		"--profiling=false",
	)
	if err != nil {
		return err
	}
	defer apiserver.stop()

	deadline := time.Now().Add(f.startupTimeout)
	if err := waitReady(serverURL, p.caFile, adminToken, deadline, apiserver); err != nil {
		return err
	}
	kubeconfig := filepath.Join(f.dir, "admin.kubeconfig")
	if err := writeKubeconfig(kubeconfig, serverURL, p.caFile, adminToken); err != nil {
		return err
	}
	controllers, err := startChild(f.dir, "kube-controller-manager", self, "kube-controller-manager",
		"--kubeconfig="+kubeconfig,
		"--authentication-kubeconfig="+kubeconfig,
		"--authorization-kubeconfig="+kubeconfig,
		"--controllers=endpointslicemirroring,garbagecollector",
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port=0",
		"--use-service-account-credentials=false",
		"--profiling=false",
	)
	if err != nil {
		return err
	}
	defer controllers.stop()

	config := &rest.Config{Host: serverURL, BearerToken: adminToken,
		TLSClientConfig: rest.TLSClientConfig{CAFile: p.caFile},
		// The self-check's Endpoints draw the deprecation warning; it is expected here.
		WarningHandler: rest.NoWarnings{}}
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		return err
	}
	if err := checkMirroring(client, deadline, controllers); err != nil {
		return err
	}
	info, err := client.Discovery().ServerVersion()
	if err != nil {
		return fmt.Errorf("server version: %w", err)
	}
	line, err := json.Marshal(ready{
		URL: serverURL, CAFile: p.caFile, AdminToken: adminToken, EpcheckToken: epcheckToken,
		EpcheckUser: f.epcheckUser, Kubeconfig: kubeconfig, AuditLog: auditLog, Dir: f.dir,
		Version: info.GitVersion,
	})
	if err != nil {
		return err
	}
	if f.readyFile != "" {
		if err := os.WriteFile(f.readyFile, append(line, '\n'), 0o600); err != nil {
			return err
		}
	}
	fmt.Println(string(line))

	select {
	case <-stop:
	case <-stdinClosed:
	case <-apiserver.exited:
		return errors.New("kube-apiserver exited; see " + apiserver.logPath)
	case <-controllers.exited:
		return errors.New("kube-controller-manager exited; see " + controllers.logPath)
	}
	fmt.Fprintln(os.Stderr, "kube-conformance: shutting down")
	return nil
}

// serviceAccountNamespace returns NS of "system:serviceaccount:NS:NAME", or "default".
func serviceAccountNamespace(user string) string {
	const prefix = "system:serviceaccount:"
	if len(user) > len(prefix) && user[:len(prefix)] == prefix {
		rest := user[len(prefix):]
		for i := range len(rest) {
			if rest[i] == ':' {
				return rest[:i]
			}
		}
	}
	return "default"
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startEtcd(dir string) (*embed.Etcd, string, error) {
	clientPort, err := freePort()
	if err != nil {
		return nil, "", err
	}
	peerPort, err := freePort()
	if err != nil {
		return nil, "", err
	}
	cfg := embed.NewConfig()
	cfg.Name = "conformance"
	cfg.Dir = filepath.Join(dir, "etcd")
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{filepath.Join(dir, "etcd.log")}
	cfg.UnsafeNoFsync = true
	clientURL := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(clientPort)}
	peerURL := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(peerPort)}
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	etcd, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", err
	}
	select {
	case <-etcd.Server.ReadyNotify():
	case <-time.After(time.Minute):
		etcd.Close()
		return nil, "", errors.New("not ready within a minute")
	}
	return etcd, clientURL.String(), nil
}

// child is a control-plane process: this binary re-executed in another role.
type child struct {
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
}

func startChild(dir, name, self string, args ...string) (*child, error) {
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// Dies with us even on SIGKILL, so no control plane outlives a crashed test run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(c.exited)
	}()
	return c, nil
}

// stop sends SIGTERM and waits up to 20 s before killing.
func (c *child) stop() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(20 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

func waitReady(serverURL, caFile, token string, deadline time.Time, apiserver *child) error {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	client := &http.Client{Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	for time.Now().Before(deadline) {
		select {
		case <-apiserver.exited:
			return errors.New("kube-apiserver exited during start-up; see " + apiserver.logPath)
		default:
		}
		req, _ := http.NewRequest(http.MethodGet, serverURL+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		if resp, err := client.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	return errors.New("kube-apiserver not ready in time; see " + apiserver.logPath)
}

func writeKubeconfig(path, server, caFile, token string) error {
	text := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: conformance
  cluster: {server: %q, certificate-authority: %q}
users:
- name: admin
  user: {token: %q}
contexts:
- name: conformance
  context: {cluster: conformance, user: admin}
current-context: conformance
`, server, caFile, token)
	return os.WriteFile(path, []byte(text), 0o600)
}

// checkMirroring writes a selector-less Service with a hand-written Endpoints object and waits
// for the mirroring controller's EndpointSlice: proof that the controllers run.
func checkMirroring(client kubernetes.Interface, deadline time.Time, controllers *child) error {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	const ns, name = "default", "conformance-self-check"
	services := client.CoreV1().Services(ns)
	_, err := services.Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("self-check service: %w", err)
	}
	_, err = client.CoreV1().Endpoints(ns).Create(ctx, &corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Subsets: []corev1.EndpointSubset{{
			Addresses: []corev1.EndpointAddress{{IP: "203.0.113.10"}},
			Ports:     []corev1.EndpointPort{{Port: 80}},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("self-check endpoints: %w", err)
	}
	selector := discoveryv1.LabelServiceName + "=" + name
	for {
		select {
		case <-controllers.exited:
			return errors.New("kube-controller-manager exited during start-up; see " + controllers.logPath)
		case <-ctx.Done():
			return errors.New("the mirroring controller made no EndpointSlice in time; see " + controllers.logPath)
		case <-time.After(200 * time.Millisecond):
		}
		slices, err := client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err == nil && len(slices.Items) > 0 {
			break
		}
	}
	// Deleting the Service removes the Endpoints' mirror through the controllers.
	if err := client.CoreV1().Endpoints(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		return err
	}
	return services.Delete(ctx, name, metav1.DeleteOptions{})
}
