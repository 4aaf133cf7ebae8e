// Command euid prints its effective user id: run from a mount by another
// user, it shows whether the mount honours its setuid bit.
package main

import (
	"fmt"
	"os"
)

func main() { fmt.Println(os.Geteuid()) }
