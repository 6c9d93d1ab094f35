package org.tftl.host;

import java.util.concurrent.atomic.AtomicInteger;
import org.junit.platform.engine.TestExecutionResult;
import org.junit.platform.launcher.TestExecutionListener;
import org.junit.platform.launcher.TestIdentifier;
import org.junit.platform.launcher.TestPlan;

/** Prints the plain "N passed, N failed, N skipped" line that CI reads, after the JUnit run. */
public final class SummaryListener implements TestExecutionListener {
  private final AtomicInteger passed = new AtomicInteger();
  private final AtomicInteger failed = new AtomicInteger();
  private final AtomicInteger skipped = new AtomicInteger();

  @Override
  public void executionSkipped(TestIdentifier id, String reason) {
    if (id.isTest()) {
      skipped.incrementAndGet();
    }
  }

  @Override
  public void executionFinished(TestIdentifier id, TestExecutionResult result) {
    if (!id.isTest()) {
      return;
    }
    if (result.getStatus() == TestExecutionResult.Status.SUCCESSFUL) {
      passed.incrementAndGet();
    } else if (result.getStatus() == TestExecutionResult.Status.ABORTED) {
      skipped.incrementAndGet();
    } else {
      failed.incrementAndGet();
    }
  }

  @Override
  public void testPlanExecutionFinished(TestPlan plan) {
    System.out.println(passed.get() + " passed, " + failed.get() + " failed, " + skipped.get() + " skipped");
  }
}
