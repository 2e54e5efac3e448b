package testenv

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// VersityGWVersion is the S3 gateway the object-storage tests run: Versity's
// versitygw with its POSIX backend, a real S3 server in one process.
const VersityGWVersion = "v1.8.0"

// S3 is a versitygw process owned by one test, serving the buckets in a
// directory of its own. Kill is a real crash (SIGKILL); Start brings it
// back on the same port and directory.
type S3 struct {
	// Endpoint is the gateway's base URL, http://127.0.0.1:<port>.
	Endpoint string
	// AccessKey and SecretKey are its root credentials; AccessKeyFile and
	// SecretKeyFile hold them, for the *_FILE settings.
	AccessKey, SecretKey         string
	AccessKeyFile, SecretKeyFile string

	bin, data, logPath, addr string

	mu   sync.Mutex
	proc *exec.Cmd
	done chan struct{}
}

// S3Gateway builds versitygw once per machine (into the user's cache,
// keyed by version) and starts it on a free loopback port with an empty
// data directory. It stops when the test ends, however it ends.
func S3Gateway(t testing.TB) *S3 {
	t.Helper()
	bin, err := versityGW()
	if err != nil {
		missing(t, "versitygw "+VersityGWVersion+" (built with go install from the module proxy)", err)
	}
	dir := t.TempDir()
	s := &S3{bin: bin, data: filepath.Join(dir, "data"), logPath: filepath.Join(dir, "versitygw.log"),
		AccessKey: "vouch" + randomHex(t, 6), SecretKey: randomHex(t, 20),
		AccessKeyFile: filepath.Join(dir, "access-key"), SecretKeyFile: filepath.Join(dir, "secret-key")}
	if err := os.MkdirAll(s.data, 0o700); err != nil {
		t.Fatal(err)
	}
	for f, v := range map[string]string{s.AccessKeyFile: s.AccessKey, s.SecretKeyFile: s.SecretKey} {
		if err := os.WriteFile(f, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	ln.Close()
	s.Endpoint = "http://" + s.addr
	t.Cleanup(func() { s.stop() })
	s.Start(t)
	return s
}

// Start starts the gateway (after Kill) and returns once it answers.
func (s *S3) Start(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		t.Fatal("testenv: versitygw is running already")
	}
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(s.bin, "--port", s.addr, "posix", s.data)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+s.AccessKey, "ROOT_SECRET_KEY="+s.SecretKey)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start versitygw: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.proc, s.done = cmd, done
	// Ready when it answers HTTP at all (an anonymous GET / is refused).
	deadline := time.Now().Add(30 * time.Second)
	hc := &http.Client{Timeout: time.Second}
	for {
		resp, err := hc.Get(s.Endpoint + "/")
		if err == nil {
			resp.Body.Close()
			return
		}
		select {
		case <-done:
			s.proc = nil
			t.Fatalf("testenv: versitygw exited at start:\n%s", s.logTail())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: versitygw did not answer within 30s: %v\n%s", err, s.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill crashes the gateway with SIGKILL and waits until it is gone.
func (s *S3) Kill(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		t.Fatal("testenv: versitygw is not running")
	}
	_ = syscall.Kill(-s.proc.Process.Pid, syscall.SIGKILL)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatal("testenv: versitygw did not die within 10s of SIGKILL")
	}
	s.proc = nil
}

func (s *S3) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return
	}
	_ = syscall.Kill(-s.proc.Process.Pid, syscall.SIGKILL)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
	}
	s.proc = nil
}

// Client is a signed client of the gateway with the root credentials.
func (s *S3) Client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := minio.New(s.addr, &minio.Options{Creds: credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		Region: "us-east-1", BucketLookup: minio.BucketLookupPath})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Bucket makes a bucket. Public ones let anyone read their objects, not
// list them, as a bucket behind a CDN is set up (docs/operations.md).
func (s *S3) Bucket(t testing.TB, name string, public bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := s.Client(t)
	if err := c.MakeBucket(ctx, name, minio.MakeBucketOptions{Region: "us-east-1"}); err != nil {
		t.Fatalf("testenv: make bucket %s: %v", name, err)
	}
	if public {
		if err := c.SetBucketPolicy(ctx, name, PublicReadPolicy(name)); err != nil {
			t.Fatalf("testenv: bucket policy of %s: %v", name, err)
		}
	}
}

// PublicReadPolicy is the bucket policy letting anyone GET the objects of
// bucket (not list them, not write).
func PublicReadPolicy(bucket string) string {
	return `{"Version":"2012-10-17","Statement":[{"Sid":"PublicRead","Effect":"Allow","Principal":"*",` +
		`"Action":["s3:GetObject"],"Resource":["arn:aws:s3:::` + bucket + `/*"]}]}`
}

// URL is the path-style URL of prefix in bucket, as a phone reads it.
func (s *S3) URL(bucket, prefix string) string {
	if prefix == "" {
		return s.Endpoint + "/" + bucket
	}
	return s.Endpoint + "/" + bucket + "/" + prefix
}

func (s *S3) logTail() string {
	b, _ := os.ReadFile(s.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

var versityOnce struct {
	once sync.Once
	path string
	err  error
}

// versityGW is the versitygw binary of VersityGWVersion, built once into
// the user's cache directory (one to four minutes cold) and reused by every
// later test process; a file lock keeps two test processes from building
// it at once.
func versityGW() (string, error) {
	versityOnce.once.Do(func() {
		versityOnce.path, versityOnce.err = buildVersityGW()
	})
	return versityOnce.path, versityOnce.err
}

func buildVersityGW() (string, error) {
	dir, err := goInstall("versitygw-"+VersityGWVersion, VersityGWVersion, "github.com/versity/versitygw/cmd/versitygw")
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "versitygw"), nil
}

// Objects lists every object key below prefix in bucket, for checks.
func (s *S3) Objects(t testing.TB, bucket, prefix string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var keys []string
	for o := range s.Client(t).ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			t.Fatalf("testenv: list %s/%s: %v", bucket, prefix, o.Err)
		}
		keys = append(keys, o.Key)
	}
	return keys
}
