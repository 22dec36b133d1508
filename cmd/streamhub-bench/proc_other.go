//go:build !linux

package main

import (
	"errors"
	"syscall"
)

// childAttr has nothing to add outside Linux.
func childAttr() *syscall.SysProcAttr { return nil }

// raiseFileLimit is Linux-only, like the /proc memory readings.
func raiseFileLimit() (uint64, error) {
	return 0, errors.New("the file limit is only raised on Linux")
}
