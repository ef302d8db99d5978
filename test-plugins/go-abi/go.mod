module ferrytest/goabi

go 1.24
