package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/vouch-nl/vouch/internal/phoneapi"
	"github.com/vouch-nl/vouch/internal/phoneclient"
)

// The load generators of the uploads and of the origin run in a process
// of their own — this binary again, as `bench loadgen` — so that the CPU
// they spend is theirs, not taken from the bench process's share beside
// the bus, and the CPU each side used can be read apart: the generator's
// from its rusage, the server's from /proc.

// loadgenCommand is the subcommand of the load generator.
const loadgenCommand = "loadgen"

// loadgenResult is what the generator prints on its standard output.
type loadgenResult struct {
	// Start is when the first upload was sent (closed loop) or due (open
	// loop), End when the last was answered.
	Start, End time.Time
	// Latencies are each upload's, in the order of the file: from when it
	// was sent (closed loop) or due (open loop) to its answer.
	Latencies []time.Duration
	Error     string `json:",omitempty"`
}

// loadgenRun is a finished generator: what it measured and the CPU it
// used.
type loadgenRun struct {
	loadgenResult
	cpuSeconds float64
}

// writeBodies writes the uploads' bodies to path for the generator: each
// a 4-byte big-endian length and the bytes.
func writeBodies(path string, bodies [][]byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	var n [4]byte
	for _, b := range bodies {
		binary.BigEndian.PutUint32(n[:], uint32(len(b)))
		w.Write(n[:])
		w.Write(b)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// readBodies reads what writeBodies wrote.
func readBodies(r io.Reader) ([][]byte, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	var out [][]byte
	var n [4]byte
	for {
		if _, err := io.ReadFull(br, n[:]); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return nil, fmt.Errorf("bodies: %w", err)
		}
		size := binary.BigEndian.Uint32(n[:])
		if size > 1<<20 {
			return nil, fmt.Errorf("bodies: a body of %d bytes", size)
		}
		b := make([]byte, size)
		if _, err := io.ReadFull(br, b); err != nil {
			return nil, fmt.Errorf("bodies: %w", err)
		}
		out = append(out, b)
	}
}

// runLoadgen writes bodies to dir, runs the generator on them against
// addr — a closed loop of concurrency at once, or with rate > 0 an open
// loop of rate uploads a second — and returns what it measured.
func runLoadgen(ctx context.Context, dir, addr string, bodies [][]byte, concurrency int, rate float64) (loadgenRun, error) {
	var run loadgenRun
	path := filepath.Join(dir, "uploads.bin")
	if err := writeBodies(path, bodies); err != nil {
		return run, err
	}
	defer os.Remove(path)
	self, err := os.Executable()
	if err != nil {
		return run, err
	}
	cmd := exec.CommandContext(ctx, self, loadgenCommand, "-addr", addr, "-bodies", path,
		"-concurrency", fmt.Sprint(concurrency), "-rate", fmt.Sprint(rate))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = cmd.Run()
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			run.cpuSeconds = rusageSeconds(ru)
		}
	}
	if err != nil {
		return run, fmt.Errorf("load generator: %w\n%s", err, tail(stderr.Bytes(), 2000))
	}
	if err := json.Unmarshal(stdout.Bytes(), &run.loadgenResult); err != nil {
		return run, fmt.Errorf("load generator's result: %w", err)
	}
	if run.Error != "" {
		return run, fmt.Errorf("load generator: %s", run.Error)
	}
	if len(run.Latencies) != len(bodies) {
		return run, fmt.Errorf("load generator: %d latencies of %d uploads", len(run.Latencies), len(bodies))
	}
	return run, nil
}

// loadgenMain is `bench loadgen`: it reads the bodies, sends them, and
// prints a loadgenResult; its exit status is 2 for bad arguments.
func loadgenMain(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(loadgenCommand, flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "", "the ingest's address, host:port")
	bodiesPath := fs.String("bodies", "", "the uploads' bodies (writeBodies)")
	concurrency := fs.Int("concurrency", 64, "uploads (or GETs) at once (closed loop)")
	rate := fs.Float64("rate", 0, "uploads a second (open loop; 0: closed loop)")
	get := fs.String("get", "", "a URL to GET instead, for -seconds (the origin's load)")
	etag := fs.String("etag", "", "with -get: If-None-Match")
	want := fs.Int("want", http.StatusOK, "with -get: the status every answer must have")
	size := fs.Int64("size", 0, "with -get: the bytes every answer's body must have")
	seconds := fs.Float64("seconds", 3, "with -get: how long")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || *concurrency < 1 || *rate < 0 {
		fmt.Fprintln(stderr, "usage: bench loadgen -addr host:port -bodies FILE [-concurrency N | -rate R]\n   or: bench loadgen -get URL [-etag E] -want STATUS -size BYTES -concurrency N -seconds S")
		return 2
	}
	if *get != "" {
		if *seconds <= 0 || *size < 0 {
			fmt.Fprintln(stderr, "bench loadgen -get: -seconds above 0, -size not below")
			return 2
		}
		var res getResult
		n, took, err := loadGET(context.Background(), *get, *etag, *want, *size, *concurrency, time.Duration(*seconds*float64(time.Second)))
		res.Requests, res.Seconds = n, took.Seconds()
		if err != nil {
			res.Error = err.Error()
		}
		if err := json.NewEncoder(stdout).Encode(res); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		return 0
	}
	if *addr == "" || *bodiesPath == "" {
		fmt.Fprintln(stderr, "usage: bench loadgen -addr host:port -bodies FILE [-concurrency N | -rate R]")
		return 2
	}
	f, err := os.Open(*bodiesPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	bodies, err := readBodies(f)
	f.Close()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	base := "http://" + *addr
	hc := phoneclient.DefaultHTTPClient(max(*concurrency, 256))
	ctx := context.Background()
	send := func(body []byte) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+phoneapi.PathUploads, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(phoneapi.HeaderChaff, phoneapi.ChaffReal)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("upload: HTTP %d %s", resp.StatusCode, tail(b, 500))
		}
		return nil
	}
	var res loadgenResult
	if *rate > 0 {
		res = openLoop(bodies, *rate, send)
	} else {
		res = closedLoop(bodies, *concurrency, send)
	}
	if err := json.NewEncoder(stdout).Encode(res); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

// closedLoop sends bodies from workers goroutines, each sending its next
// when its last is answered.
func closedLoop(bodies [][]byte, workers int, send func([]byte) error) loadgenResult {
	res := loadgenResult{Start: time.Now()}
	lat, _, err := concurrently(workers, len(bodies), 0, func(i int) error { return send(bodies[i]) })
	res.End, res.Latencies = time.Now(), lat
	if err != nil {
		res.Error = err.Error()
	}
	return res
}

// openLoop sends each body when it is due, rate a second whatever the
// answers; latency counts from when it was due, not sent: a server that
// falls behind pays for the queue it makes.
func openLoop(bodies [][]byte, rate float64, send func([]byte) error) loadgenResult {
	res := loadgenResult{Latencies: make([]time.Duration, len(bodies))}
	var wg sync.WaitGroup
	var failed firstError
	res.Start = time.Now()
	for i := range bodies {
		due := res.Start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		time.Sleep(time.Until(due))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := send(bodies[i]); err != nil {
				failed.set(err)
			}
			res.Latencies[i] = time.Since(due)
		}()
	}
	wg.Wait()
	res.End = time.Now()
	if failed.err != nil { // read after wg.Wait: every set is done
		res.Error = failed.err.Error()
	}
	return res
}

// firstError keeps the first error of many goroutines. (An atomic.Value
// panics when a second error of another type is stored: a *url.Error after
// an *errors.errorString ended the open loop so.)
type firstError struct {
	once sync.Once
	err  error
}

func (f *firstError) set(err error) { f.once.Do(func() { f.err = err }) }
