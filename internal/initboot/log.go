package initboot

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Log writes cfs-init's console lines, each stamped with the kernel's
// uptime the way the kernel stamps its own messages, so that the two read
// as one timeline:
//
//	[    2.345678] cfs-init: mounted /dev/vda on /sysroot (ext4, 3 ms)
//
// Step lines only appear with cfs.debug; errors and the one-line summary
// always do. Every step is also timed for the boot record.
type Log struct {
	mu    sync.Mutex
	out   io.Writer // the console
	kmsg  io.Writer // the kernel log, for the lines that always print; may be nil
	debug bool
	now   func() time.Duration // time since the kernel started
	start time.Duration        // when cfs-init started
	steps []StepTime
}

// NewLog returns a Log writing to out. kmsg, if not nil, receives the
// lines that always print (errors, the summary), so that they reach the
// journal; step lines stay out of it because the kernel rate-limits
// writes to /dev/kmsg.
func NewLog(out, kmsg io.Writer, debug bool) *Log {
	l := &Log{out: out, kmsg: kmsg, debug: debug, now: Uptime}
	l.start = l.now()
	return l
}

// Uptime returns the time since the kernel started (CLOCK_BOOTTIME), the
// clock of the kernel's own log timestamps.
func Uptime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// SetDebug turns step lines on or off (once the command line is known).
func (l *Log) SetDebug(on bool) {
	l.mu.Lock()
	l.debug = on
	l.mu.Unlock()
}

// Debugf prints a step line when debugging.
func (l *Log) Debugf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.debug {
		l.line(false, format, args...)
	}
}

// Printf prints a line always: errors, warnings, the summary.
func (l *Log) Printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.line(true, format, args...)
}

func (l *Log) line(always bool, format string, args ...any) {
	msg := strings.TrimRight(fmt.Sprintf(format, args...), "\n")
	up := l.now()
	fmt.Fprintf(l.out, "[%5d.%06d] cfs-init: %s\n", up/time.Second, (up%time.Second)/time.Microsecond, msg)
	if always && l.kmsg != nil {
		// <7> (debug) keeps the kernel from echoing it to the console,
		// which already has it.
		fmt.Fprintf(l.kmsg, "<7>cfs-init: %s\n", msg)
	}
}

// Timer times one step.
type Timer struct {
	l     *Log
	name  string
	start time.Duration
}

// Begin starts timing the step name.
func (l *Log) Begin(name string) *Timer {
	return &Timer{l: l, name: name, start: l.now()}
}

// End records the step's duration and prints a debug line with it
// appended: "mounted /dev/vda on /sysroot (ext4, 3 ms)" when the message
// ends in a parenthesis, "... (3 ms)" otherwise. An empty format records
// the time without a line.
func (t *Timer) End(format string, args ...any) time.Duration {
	d := t.l.now() - t.start
	t.l.mu.Lock()
	t.l.steps = append(t.l.steps, StepTime{Name: t.name, MS: ms(d)})
	t.l.mu.Unlock()
	if format != "" {
		msg := fmt.Sprintf(format, args...)
		if strings.HasSuffix(msg, ")") {
			msg = msg[:len(msg)-1] + ", " + fmtDuration(d) + ")"
		} else {
			msg += " (" + fmtDuration(d) + ")"
		}
		t.l.Debugf("%s", msg)
	}
	return d
}

// addStep records a step timed elsewhere (one that overlapped others).
func (l *Log) addStep(name string, d time.Duration) {
	l.mu.Lock()
	l.steps = append(l.steps, StepTime{Name: name, MS: ms(d)})
	l.mu.Unlock()
}

// Steps returns the steps timed so far.
func (l *Log) Steps() []StepTime {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]StepTime(nil), l.steps...)
}

// stepTotal is the time spent in the named steps.
func (l *Log) stepTotal(names ...string) time.Duration {
	var total float64
	for _, s := range l.Steps() {
		for _, n := range names {
			if s.Name == n {
				total += s.MS
			}
		}
	}
	return time.Duration(total * float64(time.Millisecond))
}

func ms(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}

// fmtDuration prints a step's time the way a person reads it: "0.4 ms",
// "3 ms", "1.25 s".
func fmtDuration(d time.Duration) string {
	switch {
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.1f ms", ms(d))
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}

// SetKmsg starts copying the lines that always print to w (/dev/kmsg,
// once /dev is mounted).
func (l *Log) SetKmsg(w io.Writer) {
	l.mu.Lock()
	l.kmsg = w
	l.mu.Unlock()
}
