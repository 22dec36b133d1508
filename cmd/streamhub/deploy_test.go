package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// The deployment files, from this package's directory.
const (
	kubernetesDir = "../../deploy/kubernetes"
	composeFile   = "../../deploy/compose.yaml"
	clusterScript = "../../deploy/cluster.sh"
	// imageEntrypoint is where the image keeps the server
	// (cmd/streamhub-image, Dockerfile).
	imageEntrypoint = "/usr/local/bin/streamhub"
)

// readEnv returns the environment variables the server reads: parsing
// looks up STREAMHUB_<NAME> for every flag that takes one.
func readEnv(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	if _, err := parseOptions(nil, func(k string) (string, bool) { names[k] = true; return "", false }); err != nil {
		t.Fatal(err)
	}
	return names
}

// parseDeployed parses a deployed configuration as the server would: args
// after the program name, and the environment. It checks first that every
// STREAMHUB_ variable names a flag, since the server ignores those that
// name none.
func parseDeployed(t *testing.T, args []string, env map[string]string) (*options, error) {
	t.Helper()
	known := readEnv(t)
	var unknown []string
	for name := range env {
		if strings.HasPrefix(name, "STREAMHUB_") && !known[name] {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return nil, fmt.Errorf("no flag of the server reads %s", strings.Join(unknown, ", "))
	}
	return parseOptions(args, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
}

// port is the port of a listen address such as ":8081".
func port(t *testing.T, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, err := strconv.ParseInt(p, 10, 32)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return int32(n)
}

// manifests are the decoded objects of deploy/kubernetes.
type manifests struct {
	deployments []*appsv1.Deployment
	services    []*corev1.Service
	pdbs        []*policyv1.PodDisruptionBudget
}

// readManifests decodes every document of every YAML file in dir strictly
// into its Kubernetes API type: an unknown or misspelt field, a duplicate
// key or a kind the test does not know fails.
func readManifests(t *testing.T, dir string) manifests {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s (%v)", dir, err)
	}
	var m manifests
	separator := regexp.MustCompile(`(?m)^---\s*$`)
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range separator.Split(string(data), -1) {
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
				t.Fatalf("%s, document %d: %v", file, i+1, err)
			}
			if tm.Kind == "" && strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			var obj any
			switch tm.GroupVersionKind().String() {
			case "apps/v1, Kind=Deployment":
				d := &appsv1.Deployment{}
				m.deployments, obj = append(m.deployments, d), d
			case "/v1, Kind=Service":
				s := &corev1.Service{}
				m.services, obj = append(m.services, s), s
			case "policy/v1, Kind=PodDisruptionBudget":
				p := &policyv1.PodDisruptionBudget{}
				m.pdbs, obj = append(m.pdbs, p), p
			default:
				t.Fatalf("%s, document %d: %s %s is not a kind this test checks", file, i+1, tm.APIVersion, tm.Kind)
			}
			if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
				t.Fatalf("%s, document %d: %v", file, i+1, err)
			}
		}
	}
	return m
}

// stripComments drops the comment lines of a YAML document.
func stripComments(doc string) string {
	var b strings.Builder
	for line := range strings.Lines(doc) {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// containerEnv is a container's environment as the server would see it:
// values from Secrets and ConfigMaps become placeholders of the right shape.
func containerEnv(t *testing.T, c corev1.Container) map[string]string {
	t.Helper()
	env := map[string]string{}
	// The README's example of the Secret's value.
	placeholders := map[string]string{"STREAMHUB_REDIS_ADDR": "rediss://default:PASSWORD@redis.example.internal:6380/0"}
	for _, e := range c.Env {
		if _, dup := env[e.Name]; dup {
			t.Errorf("container %s sets %s twice", c.Name, e.Name)
		}
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case placeholders[e.Name] != "":
			env[e.Name] = placeholders[e.Name]
		default:
			t.Errorf("container %s: %s comes from a reference this test has no placeholder for", c.Name, e.Name)
		}
	}
	if len(c.EnvFrom) > 0 {
		t.Errorf("container %s: envFrom hides which variables it sets; list them under env", c.Name)
	}
	return env
}

// TestKubernetesManifests checks deploy/kubernetes against the server:
// every setting names a flag and parses, the ports are the ones the server
// listens on, the probes are paths the admin server answers, the grace
// period outlasts the preStop pause and the drain, and the pods run as the
// image allows (non-root, read-only, no shell).
func TestKubernetesManifests(t *testing.T) {
	m := readManifests(t, kubernetesDir)
	if len(m.deployments) != 1 {
		t.Fatalf("%d Deployments, want 1", len(m.deployments))
	}
	d := m.deployments[0]
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
		t.Errorf("replicas %v, want 3", d.Spec.Replicas)
	}
	pod := d.Spec.Template
	selector, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || selector.Empty() || !selector.Matches(labels.Set(pod.Labels)) {
		t.Fatalf("the Deployment's selector %v (%v) does not select its pods %v", d.Spec.Selector, err, pod.Labels)
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("%d containers, want the server alone", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]

	// The configuration parses as the server parses it.
	if len(c.Command) > 0 && !slices.Equal(c.Command, []string{imageEntrypoint}) {
		t.Errorf("command %q: the image's entrypoint is %s", c.Command, imageEntrypoint)
	}
	env := containerEnv(t, c)
	o, err := parseDeployed(t, c.Args, env)
	if err != nil {
		t.Fatalf("the server refuses the Deployment's configuration (args %q): %v", c.Args, err)
	}
	if o.engine != engineRedis {
		t.Errorf("engine %q, want redis: three replicas share sessions only through Redis", o.engine)
	}
	var redisFromSecret bool
	for _, e := range c.Env {
		redisFromSecret = redisFromSecret || e.Name == "STREAMHUB_REDIS_ADDR" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil
	}
	if !redisFromSecret {
		t.Error("STREAMHUB_REDIS_ADDR does not come from a Secret (it may hold a password)")
	}

	// Ports: the container's are the server's.
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	httpAddr, ok := env["STREAMHUB_HTTP_ADDR"]
	if !ok {
		t.Fatal("STREAMHUB_HTTP_ADDR is not set: the http port cannot be checked")
	}
	for name, want := range map[string]int32{"grpc": port(t, o.grpcAddr), "admin": port(t, o.adminAddr), "http": port(t, httpAddr)} {
		if ports[name] != want {
			t.Errorf("container port %q = %d, want %d, where the server listens", name, ports[name], want)
		}
	}
	if a := pod.Annotations["prometheus.io/port"]; a != "" && a != strconv.Itoa(int(ports["admin"])) {
		t.Errorf("prometheus.io/port %s is not the admin port %d", a, ports["admin"])
	}
	resolve := func(p intstr.IntOrString) int32 {
		if p.Type == intstr.String {
			return ports[p.StrVal]
		}
		return p.IntVal
	}

	// Probes: the admin server's paths, on the admin port; no exec (the
	// image has no shell).
	probes := map[string]*corev1.Probe{"/readyz": c.ReadinessProbe, "/livez": c.LivenessProbe}
	for path, p := range probes {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("no HTTP probe for %s", path)
			continue
		}
		if p.HTTPGet.Path != path || resolve(p.HTTPGet.Port) != port(t, o.adminAddr) {
			t.Errorf("probe GET %s on port %v, want %s on the admin port %d", p.HTTPGet.Path, p.HTTPGet.Port.String(), path, port(t, o.adminAddr))
		}
	}
	if c.StartupProbe != nil && c.StartupProbe.Exec != nil {
		t.Error("an exec startup probe: the image has no shell")
	}
	s := startMain(t) // the paths are the server's own
	for path := range probes {
		if code := httpStatus("http://" + s.adminAddr() + path); code != 200 {
			t.Errorf("GET %s on the admin server: %d", path, code)
		}
	}

	// Shutdown: the kubelet waits out the preStop pause and then the drain.
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		t.Fatal("no preStop sleep: endpoints may still send connections to a draining pod")
	}
	if c.Lifecycle.PreStop.Exec != nil || c.Lifecycle.PostStart != nil && c.Lifecycle.PostStart.Exec != nil {
		t.Error("an exec lifecycle hook: the image has no shell")
	}
	pause := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	grace := time.Duration(0)
	if g := pod.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	if grace <= pause+o.drainTimeout {
		t.Errorf("terminationGracePeriodSeconds %s, want more than the preStop pause %s plus the drain timeout %s", grace, pause, o.drainTimeout)
	}

	// Security: non-root, read-only, no privilege escalation.
	psc, csc := pod.Spec.SecurityContext, c.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if csc == nil {
		csc = &corev1.SecurityContext{}
	}
	if !(psc.RunAsNonRoot != nil && *psc.RunAsNonRoot || csc.RunAsNonRoot != nil && *csc.RunAsNonRoot) {
		t.Error("runAsNonRoot is not set")
	}
	for _, uid := range []*int64{psc.RunAsUser, csc.RunAsUser} {
		if uid != nil && *uid == 0 {
			t.Error("runAsUser 0")
		}
	}
	if csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem is not true")
	}
	if csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %v: want CPU and memory requests and a memory limit", c.Resources)
	}

	// Services: the gRPC and HTTP ports, never the admin port.
	exposed := map[int32]bool{}
	for _, svc := range m.services {
		if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(pod.Labels)) || len(svc.Spec.Selector) == 0 {
			t.Errorf("Service %s selects %v, not the pods %v", svc.Name, svc.Spec.Selector, pod.Labels)
		}
		for _, p := range svc.Spec.Ports {
			target := p.Port // an omitted targetPort is the port
			if p.TargetPort.Type == intstr.String || p.TargetPort.IntVal != 0 {
				target = resolve(p.TargetPort)
			}
			if target == 0 {
				t.Errorf("Service %s port %s targets %s, which is no container port", svc.Name, p.Name, p.TargetPort.String())
			}
			if target == ports["admin"] {
				t.Errorf("Service %s exposes the admin port (pprof and the debug switch have no authentication)", svc.Name)
			}
			exposed[target] = true
		}
	}
	for _, name := range []string{"grpc", "http"} {
		if !exposed[ports[name]] {
			t.Errorf("no Service for the %s port %d", name, ports[name])
		}
	}

	// The disruption budget covers the pods and lets one go at a time.
	if len(m.pdbs) != 1 {
		t.Fatalf("%d PodDisruptionBudgets, want 1", len(m.pdbs))
	}
	pdb := m.pdbs[0]
	pdbSelector, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	if err != nil || pdbSelector.Empty() || !pdbSelector.Matches(labels.Set(pod.Labels)) {
		t.Errorf("the PodDisruptionBudget's selector %v does not select the pods %v", pdb.Spec.Selector, pod.Labels)
	}
	if pdb.Spec.MaxUnavailable == nil && pdb.Spec.MinAvailable == nil {
		t.Error("the PodDisruptionBudget sets neither maxUnavailable nor minAvailable")
	}
}

// TestComposeFile checks deploy/compose.yaml's StreamHub services against
// the server as TestKubernetesManifests does the Deployment. Compose has no
// Go API types here, so only what is checked is decoded.
func TestComposeFile(t *testing.T) {
	data, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Image           string            `json:"image"`
			Command         []string          `json:"command"`
			Entrypoint      []string          `json:"entrypoint"`
			Environment     map[string]string `json:"environment"`
			StopGracePeriod string            `json:"stop_grace_period"`
			Ports           []string          `json:"ports"`
		} `json:"services"`
	}
	if err := yaml.Unmarshal(data, &compose); err != nil {
		t.Fatal(err)
	}
	instances := 0
	for name, svc := range compose.Services {
		if !strings.HasPrefix(name, "streamhub") {
			continue
		}
		instances++
		if len(svc.Entrypoint) > 0 {
			t.Errorf("%s: entrypoint %q replaces the server", name, svc.Entrypoint)
		}
		o, err := parseDeployed(t, svc.Command, svc.Environment)
		if err != nil {
			t.Errorf("%s: the server refuses its configuration: %v", name, err)
			continue
		}
		if o.engine != engineRedis || o.redisAddr == "" {
			t.Errorf("%s: engine %q at %q, want redis with an address", name, o.engine, o.redisAddr)
		}
		grace, err := time.ParseDuration(svc.StopGracePeriod)
		if err != nil || grace <= o.drainTimeout {
			t.Errorf("%s: stop_grace_period %q, want more than the drain timeout %s", name, svc.StopGracePeriod, o.drainTimeout)
		}
		published := slices.ContainsFunc(svc.Ports, func(p string) bool {
			return strings.HasSuffix(p, fmt.Sprintf(":%d", port(t, o.grpcAddr)))
		})
		if !published {
			t.Errorf("%s: no published port reaches the gRPC port %s (ports %q)", name, o.grpcAddr, svc.Ports)
		}
	}
	if instances != 3 {
		t.Errorf("%d StreamHub services, want 3", instances)
	}
}

// TestClusterScript checks that every STREAMHUB_ variable that make
// cluster sets names a flag of the server, and that an instance's
// settings, with the script's variables filled in, parse as the server
// parses them and put it on the script's Redis.
func TestClusterScript(t *testing.T) {
	data, err := os.ReadFile(clusterScript)
	if err != nil {
		t.Fatal(err)
	}
	names := regexp.MustCompile(`\bSTREAMHUB_[A-Z0-9_]+`).FindAllString(string(data), -1)
	if len(names) == 0 {
		t.Fatal("the cluster script sets no STREAMHUB_ variable")
	}
	known := readEnv(t)
	for _, name := range names {
		if !known[name] {
			t.Errorf("%s sets %s, which names no flag of the server", clusterScript, name)
		}
	}

	// Instance 1's environment: NAME=value words, quoted or not.
	vars := strings.NewReplacer("$redis_port", "6390", "${redis_port}", "6390", "$n", "1", "${n}", "1")
	env := map[string]string{}
	for _, m := range regexp.MustCompile(`\b(STREAMHUB_[A-Z0-9_]+)=("[^"]*"|\S*)`).FindAllStringSubmatch(string(data), -1) {
		env[m[1]] = vars.Replace(strings.Trim(m[2], `"`))
	}
	o, err := parseDeployed(t, nil, env)
	if err != nil {
		t.Fatalf("the server refuses the cluster script's configuration %v: %v", env, err)
	}
	if o.engine != engineRedis || o.redisAddr != "127.0.0.1:6390" {
		t.Errorf("engine %q at %q, want redis at the script's Redis, 127.0.0.1:6390", o.engine, o.redisAddr)
	}
	if o.grpcAddr != "127.0.0.1:50051" || o.adminAddr != "127.0.0.1:9181" {
		t.Errorf("instance 1 serves gRPC on %s and admin on %s, want 127.0.0.1:50051 and 127.0.0.1:9181 as the script says", o.grpcAddr, o.adminAddr)
	}
}
