//go:build !production

package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"

	"github.com/vouch-nl/vouch/internal/export"
)

// exportFaultVar names a step of the aggregator's run and what happens to
// the process the first time it finishes it: step:stop freezes it
// (SIGSTOP, the whole process, its lease heartbeat too) and step:kill
// kills it (SIGKILL, a real crash). The end-to-end tests set it (e2e/
// lease_test.go); a production build has no such hook.
const exportFaultVar = "VOUCH_TEST_EXPORT_FAULT"

// faultVars are the variables this (test) build reads for faults.
func faultVars() []string { return []string{exportFaultVar} }

// exportFaults arms the fault VOUCH_TEST_EXPORT_FAULT names, if any.
func exportFaults(agg *export.Aggregator, log *slog.Logger) error {
	v := os.Getenv(exportFaultVar)
	if v == "" {
		return nil
	}
	step, action, _ := strings.Cut(v, ":")
	sig := map[string]syscall.Signal{"stop": syscall.SIGSTOP, "kill": syscall.SIGKILL}[action]
	known := false
	for _, s := range []string{export.StepBatchRenamed, export.StepIndexCommitted, export.StepIndexWritten, export.StepRetired} {
		known = known || s == step
	}
	if sig == 0 || !known {
		return fmt.Errorf("%s=%q: want <step>:stop or <step>:kill, a step being %s, %s, %s or %s", exportFaultVar, v,
			export.StepBatchRenamed, export.StepIndexCommitted, export.StepIndexWritten, export.StepRetired)
	}
	var once sync.Once
	agg.OnStep(func(s string) {
		if s != step {
			return
		}
		once.Do(func() {
			log.Warn("fault injected", "step", s, "signal", action)
			_ = syscall.Kill(os.Getpid(), sig)
		})
	})
	return nil
}
