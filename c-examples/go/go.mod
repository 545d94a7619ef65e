module example.com/cimage

go 1.19
