"""The test suite; its folders mirror the package (core/, io/, eval/, cli/, plugin/, qt/)."""
