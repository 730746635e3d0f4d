module processor.example/go_host

go 1.19
