package org.tftl.host;

import com.sun.jna.Library;
import com.sun.jna.Pointer;
import com.sun.jna.ptr.LongByReference;
import com.sun.jna.ptr.PointerByReference;

/**
 * The LiteRT C functions the host backend calls, declared from the documentation of LiteRT's
 * public headers (litert/c/litert_environment.h, litert_model.h, litert_options.h,
 * litert_opaque_options.h, litert_compiled_model.h, litert_tensor_buffer.h,
 * litert_tensor_buffer_requirements.h). Handles are opaque pointers; {@code LiteRtParamIndex} and
 * {@code size_t} are 64-bit ({@code long}) on the 64-bit hosts this runs on; every function
 * returns a {@code LiteRtStatus} (0 = ok) unless it is void.
 */
interface LiteRtC extends Library {
  int STATUS_OK = 0;
  int HW_ACCELERATOR_CPU = 1;
  int TENSOR_BUFFER_HOST_MEMORY = 1;
  int LOCK_READ = 0;
  int LOCK_WRITE = 1;
  int ELEMENT_FLOAT32 = 1;
  int ELEMENT_INT32 = 2;
  /** sizeof(LiteRtRankedTensorType): element type, then a layout of rank and 8 dims + 8 strides. */
  int RANKED_TENSOR_TYPE_SIZE = 72;

  int LiteRtCreateEnvironment(int numOptions, Pointer options, PointerByReference environment);

  void LiteRtDestroyEnvironment(Pointer environment);

  int LiteRtCreateModelFromBuffer(Pointer environment, Pointer bufferAddr, long bufferSize,
      PointerByReference model);

  void LiteRtDestroyModel(Pointer model);

  int LiteRtGetNumModelSignatures(Pointer model, LongByReference numSignatures);

  int LiteRtGetModelSignature(Pointer model, long signatureIndex, PointerByReference signature);

  int LiteRtGetSignatureKey(Pointer signature, PointerByReference key);

  int LiteRtGetNumSignatureInputs(Pointer signature, LongByReference numInputs);

  int LiteRtGetNumSignatureOutputs(Pointer signature, LongByReference numOutputs);

  int LiteRtGetSignatureInputName(Pointer signature, long index, PointerByReference name);

  int LiteRtGetSignatureOutputName(Pointer signature, long index, PointerByReference name);

  int LiteRtGetSignatureInputTensorByIndex(Pointer signature, long index, PointerByReference tensor);

  int LiteRtGetSignatureOutputTensorByIndex(Pointer signature, long index, PointerByReference tensor);

  int LiteRtGetRankedTensorType(Pointer tensor, Pointer rankedTensorType);

  int LiteRtCreateOptions(PointerByReference options);

  void LiteRtDestroyOptions(Pointer options);

  int LiteRtSetOptionsHardwareAccelerators(Pointer options, int accelerators);

  int LiteRtCreateOpaqueOptions(String identifier, Pointer payload, Pointer payloadDestructor,
      PointerByReference opaqueOptions);

  int LiteRtAddOpaqueOptions(Pointer options, Pointer opaqueOptions);

  int LiteRtCreateCompiledModel(Pointer environment, Pointer model, Pointer options,
      PointerByReference compiledModel);

  void LiteRtDestroyCompiledModel(Pointer compiledModel);

  int LiteRtGetCompiledModelInputBufferRequirements(Pointer compiledModel, long signatureIndex,
      long inputIndex, PointerByReference requirements);

  int LiteRtGetCompiledModelOutputBufferRequirements(Pointer compiledModel, long signatureIndex,
      long outputIndex, PointerByReference requirements);

  int LiteRtGetTensorBufferRequirementsBufferSize(Pointer requirements, LongByReference size);

  int LiteRtCreateManagedTensorBufferFromRequirements(Pointer environment, Pointer tensorType,
      Pointer requirements, PointerByReference buffer);

  void LiteRtDestroyTensorBuffer(Pointer buffer);

  int LiteRtLockTensorBuffer(Pointer buffer, PointerByReference hostAddr, int lockMode);

  int LiteRtUnlockTensorBuffer(Pointer buffer);

  int LiteRtRunCompiledModel(Pointer compiledModel, long signatureIndex, long numInputs,
      Pointer[] inputs, long numOutputs, Pointer[] outputs);
}
