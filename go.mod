module github.com/cfs-deploy/cfs-deploy

go 1.26.0

require (
	github.com/klauspost/compress v1.20.4
	github.com/ulikunitz/xz v0.5.17
	golang.org/x/sys v0.50.0
)

require (
	github.com/BurntSushi/toml v1.6.0 // indirect
	github.com/google/go-cmp v0.7.0 // indirect
	github.com/google/go-containerregistry v0.22.1 // indirect
)
