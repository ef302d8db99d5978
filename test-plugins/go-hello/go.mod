module ferrytest/goplugin

go 1.24
