# Makes includes/ a Cython package so its .pxd files can cimport each other.
